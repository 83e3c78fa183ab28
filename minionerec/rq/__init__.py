"""Semantic IDs from item text, run as `python -m minionerec.rq.<name>` (minionerec/rq/README.md): text -> embeddings (text2emb), the
quantisers (rqkmeans, balanced_rqkmeans, rqkmeans_plus, rqvae) on their shared flags and index writing (common,
index), new items into an index (add_items), a dataset rewritten with new SIDs (reindex), reports (report), the
local MiniLM encoder unpacked (minilm).

QUANTISERS is the registry of quantisers chosen by name (bench/sids.py's `<encoder>+<quantiser>`): a new one is a
module here plus one entry.
"""

# name -> module with `Args` (a minionerec.rq.common.QuantArgs) and `main(args)`, which writes the index (minionerec.rq.index.finish);
# imported only when chosen (rqvae and rqkmeans_plus bring torch)
QUANTISERS = {
    "rqkmeans": "minionerec.rq.rqkmeans",
    "balanced_rqkmeans": "minionerec.rq.balanced_rqkmeans",
    "rqkmeans_plus": "minionerec.rq.rqkmeans_plus",
    "rqvae": "minionerec.rq.rqvae",
}
