"""MiniOneRec's library: what the entry scripts (sft.py, rl.py, evaluate.py, ...) share.

The subpackages follow the pipeline; a lower floor never imports a higher one (tests/unit/test_layers.py):

    run/        flags -> typed args + --help and the renamed flags (flags), the flag groups sft.py and rl.py
                share (args), recipes + precedence (recipe), the one entry and
                error path (cli), pre-flight checks (preflight), launch-YAML checks (launch_config), the
                launchers' topology and pre-check (topology, prelaunch), plans (plan), atomic writes and multi-file
                commits (atomic), one writer per file (file_lock), resume + checkpoint policy, process groups
                (distributed), shared output dirs (shared_dir), stale DeepSpeed JIT locks (ds_lock), tokens/s, MFU
    data/       the file formats (formats), .inter files -> the layout (inter), prompt texts (prompts),
                SFT tasks + answer-window collator (sft_tasks), RL prompt datasets (rl_tasks)
    model/      loading a checkpoint + SID tokens (loading), final_checkpoint and the end of a training run
                (saving), LoRA (lora), the offline tiny Qwen2 (tiny), real
                shapes (shapes) and their memory by arithmetic (memory),
                GGUF -> transformers directory (pretrained), the new-item alignment fine-tune (alignment)
    ranking/    SID trie + constrained beam search (constrained), HR/NDCG (metrics), offline evaluation
                plumbing (evaluation), in-training evaluation (callback), paired comparison (paired),
                the SASRec baseline ranker (sasrec: the `sasrec` reward and the bench baseline)
    rl/         GRPO trainer + config subclass (trainer), reward functions (rewards)
    serving/    top-K from a checkpoint (recommender), request batching (queue), HTTP limits and the server
                (guard), catalogue reload (reload), the routes (app)
    rq/         SID construction: text -> embeddings (text2emb), the quantisers and their registry, new items
                (add_items), reindexing, reports (python -m minionerec.rq.<name>)
    launch/     the launchers' CPU rehearsal of a GPU recipe (rehearsal, report)
    prep/       dataset preparation: Amazon 2018 / 2023 raw data, the demo dataset (python -m minionerec.prep.<name>)

Floors, bottom to top: run -> data -> model -> ranking, rq -> rl, serving -> launch, prep. docs/architecture.md has the data
flow of one SFT and one RL step and where new pieces go.
"""
