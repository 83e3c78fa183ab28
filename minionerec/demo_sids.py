"""Simple collision-free SIDs for the demo: residual k-means over TF-IDF/SVD text vectors.

Two residual k-means levels give the semantic prefix; the last level numbers the items that share
a prefix (0, 1, 2, ...), so SIDs are unique and all of the same length. rq/ holds the full methods.
"""
from __future__ import annotations

import numpy as np
from sklearn.cluster import KMeans
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer

LEVEL_NAMES = "abcdefghijklmnopqrstuvwxyz"


def simple_rq_sids(texts: list[str], codebook_size: int = 16, levels: int = 2, dim: int = 32,
                   seed: int = 0) -> list[list[str]]:
    tfidf = TfidfVectorizer().fit_transform(texts)
    residual = TruncatedSVD(n_components=min(dim, tfidf.shape[1] - 1), random_state=seed).fit_transform(tfidf)
    codes = []  # levels x [N]
    for _ in range(levels):
        km = KMeans(n_clusters=min(codebook_size, len(texts)), n_init=4, random_state=seed).fit(residual)
        codes.append(km.labels_)
        residual = residual - km.cluster_centers_[km.labels_]  # [N, dim]
    prefixes = [tuple(int(c[i]) for c in codes) for i in range(len(texts))]
    seen: dict[tuple, int] = {}
    sids = []
    for i, prefix in enumerate(prefixes):
        last = seen.get(prefix, 0)
        seen[prefix] = last + 1
        sids.append([f"<{LEVEL_NAMES[l]}_{code}>" for l, code in enumerate([*prefix, last])])
    return sids
