"""Serving top-K recommendations from a checkpoint: the recommender logic recommend.py and serve.py share
(recommender), and serve.py's HTTP API: its routes (app), request batching (queue), limits and access (guard) and
catalogue reload (reload). May import run, data, model and ranking."""
