"""What a person reads about a run: outcomes (:mod:`.outcomes`), artifacts (:mod:`.artifacts`)
and image previews (:mod:`.previews`)."""
