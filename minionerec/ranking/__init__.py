"""Ranking a closed catalogue: the SID trie and constrained beam search, HR@K / NDCG@K, offline and
in-training evaluation, paired comparison of two methods. May import run, data and model."""
