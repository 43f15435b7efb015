"""What the Prefect UI renders: form fields (:mod:`.fields`) and the flows' option models
``ImageOptions``, ``S3Options`` and ``UpscaleOptions`` (:mod:`.options`)."""
