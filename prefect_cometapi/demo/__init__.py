"""``prefect-cometapi demo``: the offline run (:mod:`.run`), its temporary Prefect server
(:mod:`.server`), the kept demo bucket (:mod:`.bucket`) and the environment helpers it alone
needs (:mod:`.environ`). Nothing else in the package imports it."""
