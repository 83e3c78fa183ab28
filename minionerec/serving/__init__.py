"""Serving top-K recommendations from a checkpoint: the recommender logic recommend.py and serve.py share,
and serve.py's HTTP API with its request batching. May import run, data, model and ranking."""
