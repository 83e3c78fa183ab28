"""GRPO for generative recommendation: TRL's GRPOTrainer with constrained SID generation.

`MiniOneRecGRPOConfig` is TRL's GRPOConfig plus MiniOneRec's four rollout options (TRL's GMPOConfig
style); every other knob is a GRPOConfig field that rl.py passes straight through.

Everything GRPO does — group-normalised advantages, the KL term to the reference model, the loss
variants, reference-model syncing, logging, checkpoints — stays TRL's (trl pinned in
requirements.txt; tests/test_trainer_hooks.py pins the hook signatures). MiniOneRec's options map
onto TRL's own: `dapo` -> loss_type="dapo", `gspo` -> importance_sampling_level="sequence"
(see `grpo_loss_options`), `sync_ref_model` and `beta` pass straight through.
"""
from __future__ import annotations

import copy
import time
from collections import Counter
from dataclasses import dataclass, field

import torch
from transformers import LogitsProcessorList
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import disable_dropout_in_model, pad

from minionerec.data import prompts
from minionerec.ranking.callback import generation_model
from minionerec.ranking.constrained import SIDLogitsProcessor, beam_search_ids, build_sid_trie, library_generation_defaults
from minionerec.rl.diagnostics import frac_zero_std, group_stats, summarise
from minionerec.rl.rewards import sid_from_ids, sid_token_map


def grpo_loss_options(dapo: bool, gspo: bool, loss_type: str = "") -> dict:
    """MiniOneRec loss flags -> GRPOConfig fields; an explicit TRL `loss_type` (dr_grpo, bnpo, ...) wins over dapo.

    Plain GRPO averages each sequence's token losses, then the sequences; DAPO averages over all
    tokens of the batch; GSPO clips one sequence-level importance ratio (with GRPO's averaging,
    as the GSPO paper does — TRL warns against mixing it with DAPO, so we refuse).
    """
    if dapo and gspo:
        raise ValueError("--dapo and --gspo are exclusive: GSPO uses GRPO's sequence averaging")
    if dapo and loss_type not in ("", "dapo"):
        raise ValueError(f"--dapo true contradicts --loss_type {loss_type}; give one of them")
    return {"loss_type": loss_type or ("dapo" if dapo else "grpo"), "importance_sampling_level": "sequence" if gspo else "token"}


@dataclass
class MiniOneRecGRPOConfig(GRPOConfig):
    """GRPOConfig plus the rollout options of MiniOneRecGRPOTrainer, validated with TRL's own checks."""

    beam_search: bool = field(default=True, metadata={
        "help": "Constrained beam search rollouts (num_beams = num_generations); false: constrained sampling."})
    dynamic_sampling: bool = field(default=False, metadata={
        "help": "Sampling only: oversample 1.5x, keep the target's copies and the most frequent others."})
    add_gt: bool = field(default=False, metadata={
        "help": "Put the ground-truth SID into a group that lacks it (replacing its last completion)."})
    mask_all_zero: bool = field(default=False, metadata={
        "help": "Drop groups whose rewards are all zero from the loss."})

    def __post_init__(self):
        super().__post_init__()
        if self.dynamic_sampling and self.beam_search:
            raise ValueError("--dynamic_sampling applies to sampled rollouts; add --beam_search false")


def select_dynamic(samples: list[tuple], target: tuple, keep: int) -> list[tuple]:
    """Dynamic sampling: from an oversampled group keep the target's copies, then the most frequent others.

    Others are taken round-robin by frequency (each distinct item once, then again while copies remain).
    """
    counts = Counter(samples)
    selected = [target] * min(counts.pop(target, 0), keep)
    others = [item for item, _ in counts.most_common()]
    while len(selected) < keep and others:
        for item in list(others):
            if len(selected) == keep:
                break
            selected.append(item)
            counts[item] -= 1
            if counts[item] == 0:
                others.remove(item)
    return selected


def disable_dropout(model: torch.nn.Module) -> None:
    """Zero every dropout of `model`, also while it is in training mode. TRL's disable_dropout_in_model zeroes the
    nn.Dropout modules only (LoRA's lora_dropout among them); Qwen2 / Llama attention drops its probabilities by a
    float attribute (attention_dropout, applied while module.training), which it leaves on."""
    disable_dropout_in_model(model)
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, float):
                setattr(module, name, 0.0)


class MiniOneRecGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose completions are valid SIDs. Overridden hooks:

    - `_generate_single_turn`: constrained beam search (one per unique prompt, num_beams =
      num_return_sequences = num_generations) or constrained sampling at `temperature`; optional
      dynamic sampling (oversample 1.5x, keep the target plus the most frequent others) and add_gt
      (put the ground-truth SID into a group that lacks it, replacing its last completion).
    - `_generate_and_score_completions`: only records the batch's targets for the two options
      above, logs the step-time split (time/generation_s, time/scoring_reference_s) and the rollout
      diagnostics (minionerec.rl.diagnostics: rollout/*), and with mask_all_zero zeroes the loss mask
      of groups whose rewards are all zero.
    - `_calculate_rewards`: only keeps the gathered rewards for mask_all_zero and the diagnostics.
    - `_get_per_token_logps_and_entropies`: the same log-probs and entropies as TRL's, with the LM
      head applied to the completion window only. Off Triton devices (CPU) TRL's fused head scores
      every position, and a SID completion is ~5 tokens after a ~100-token prompt.

    With disable_dropout (rl.py's default) `__init__` also zeroes the attention dropout that TRL's own
    leaves on (see `disable_dropout`): in the policy, which also generates the rollouts and, with LoRA,
    is the reference with its adapters disabled, and in a separate reference model.
    """

    def __init__(self, *args, sid_index: dict[str, list[str]], **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, MiniOneRecGRPOConfig):
            raise TypeError("MiniOneRecGRPOTrainer takes a MiniOneRecGRPOConfig (its rollout options live there)")
        if self.args.disable_dropout:  # rollouts, old and reference log-probs run in training mode
            for model in (self.model, self.ref_model):
                if model is not None:
                    disable_dropout(model)
        self.beam_search, self.dynamic_sampling = self.args.beam_search, self.args.dynamic_sampling
        self.add_gt, self.mask_all_zero = self.args.add_gt, self.args.mask_all_zero
        # the closed item set as a token trie on the training device: every completion is one of its paths
        # (over distinct SIDs: a public index has a few SIDs shared by several items)
        self.trie = build_sid_trie(sid_index, self._tokenizer, device=self.accelerator.device)
        if self.beam_search and self.trie.num_sids < self.num_generations:
            raise ValueError(f"beam search needs num_generations={self.num_generations} distinct SIDs per group; "
                             f"the catalogue has only {self.trie.num_sids}")
        self._id_to_sid_token = sid_token_map(self._tokenizer, sid_index)
        self._rollout_stats: torch.Tensor | None = None  # [local groups, 2 + levels] (diagnostics.group_stats)
        self._target_ids: dict[str, list[int]] = {}
        self._batch_targets: list[str] | None = None
        self._gathered_rewards: torch.Tensor | None = None
        self._generate_seconds = 0.0

    # ---- generation -------------------------------------------------------------------------
    def _target_completion(self, target: str) -> tuple[int, ...]:
        if target not in self._target_ids:
            ids = self._tokenizer(prompts.response_text(target), add_special_tokens=False)["input_ids"]
            self._target_ids[target] = ids + [self._tokenizer.eos_token_id]
        return tuple(self._target_ids[target])

    def _constrained_generate(self, prompt_ids: list[list[int]], num_return: int, beams: bool) -> list[tuple]:
        """Left-pad, generate under the SID constraint, cut each completion after its first EOS.

        beams: the evaluation decoder's own beam search (`beam_search_ids`: same ranking as
        evaluate.py, each prompt encoded once for all beams); else sampling with TRL's settings.
        One generate call per process per step on every process (equal local batches), as ZeRO-3's
        synced generation requires.
        """
        device = self.accelerator.device
        tensors = [torch.tensor(ids) for ids in prompt_ids]
        pad_id = self._tokenizer.pad_token_id
        input_ids = pad(tensors, padding_value=pad_id, padding_side="left").to(device)  # [B, P]
        attention_mask = pad([torch.ones_like(t) for t in tensors], padding_value=0, padding_side="left").to(device)
        with (
            generation_model(self) as model,  # checkpointing comes back with our kwargs (LoRA + ZeRO-3)
            torch.no_grad(),
            self.accelerator.autocast(),  # DDP bf16: fp32 weights, bf16 matmuls (a no-op under DeepSpeed: bf16 weights)
        ):
            if beams:
                out = beam_search_ids(model, input_ids, attention_mask, self.trie, num_return, pad_token_id=pad_id)
                out = out.sequences  # [B * num_return, P + depth], best beam first per prompt
            else:
                config = copy.deepcopy(self.generation_config)  # TRL's: temperature, top_p, top_k, ...
                config.max_new_tokens, config.num_return_sequences = self.trie.depth, num_return
                constraint = SIDLogitsProcessor(self.trie, prompt_len=input_ids.shape[1])  # warpers read the scores
                with library_generation_defaults(model):  # TRL's settings only, never the checkpoint's
                    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config,
                                         logits_processor=LogitsProcessorList([constraint]))
        completions = []
        for row in out[:, input_ids.shape[1]:].tolist():  # [N * num_return, <= depth]
            end = next((k for k, t in enumerate(row) if t in self.eos_token_ids), len(row) - 1)
            completions.append(tuple(row[: end + 1]))
        return completions

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """prompt_ids: B*G lists, each prompt repeated G times back to back -> (B*G completion ids, None)."""
        G, started = num_generations, time.perf_counter()
        if len(prompt_ids) % G or any(prompt_ids[i] != prompt_ids[i - i % G] for i in range(len(prompt_ids))):
            raise ValueError(f"expected each prompt repeated num_generations={G} times back to back on every "
                             f"process; make train_batch_size x gradient_accumulation_steps a multiple of it")
        unique = prompt_ids[::G]
        targets = self._batch_targets[::G] if self._batch_targets is not None else None
        if self.beam_search:
            completions = self._constrained_generate(unique, G, beams=True)
        elif self.dynamic_sampling:
            n = int(1.5 * G)  # oversample, then keep the target plus the most frequent others
            sampled = self._constrained_generate(unique, n, beams=False)
            completions = []
            for g in range(len(unique)):
                completions += select_dynamic(sampled[g * n:(g + 1) * n], self._target_completion(targets[g]), G)
        else:
            completions = self._constrained_generate(prompt_ids, 1, beams=False)
        if targets is not None:  # the policy's own rollouts, before add_gt puts the target in
            sids = [sid_from_ids(c, self._id_to_sid_token) for c in completions]
            self._rollout_stats = group_stats(sids, targets, G)
        if self.add_gt:
            for g, target in enumerate(targets):
                gt = self._target_completion(target)
                if gt not in completions[g * G:(g + 1) * G]:
                    completions[(g + 1) * G - 1] = gt  # the last (lowest-ranked) completion makes room
        self._generate_seconds = time.perf_counter() - started
        return [list(c) for c in completions], None

    # ---- scoring ----------------------------------------------------------------------------
    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, batch_size=None,
                                           compute_entropy=False, compute_aux_loss=False, **multimodal):
        """input_ids [B, P + K] (prompt, then K completion tokens) -> (log-probs [B, K], entropies [B, K] or None, None).

        Padded completion positions are 0, as in TRL's fused head (the reference in tests/test_trainer_hooks.py).
        """
        if compute_aux_loss or any(v is not None for v in multimodal.values()):
            return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, logits_to_keep,
                                                              batch_size, compute_entropy, compute_aux_loss,
                                                              **multimodal)
        batch_size = batch_size or input_ids.size(0)
        logps, entropies = [], []
        for start in range(0, input_ids.size(0), batch_size):
            ids, mask = input_ids[start:start + batch_size], attention_mask[start:start + batch_size]
            with self.accelerator.autocast():
                # the last K + 1 positions' logits predict the K completion tokens (the final one predicts nothing)
                logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=logits_to_keep + 1).logits
            log_probs = (logits[:, :-1].float() / self.temperature).log_softmax(-1)  # [b, K, V]
            pad = mask[:, -logits_to_keep:] == 0  # [b, K]
            logps.append(log_probs.gather(-1, ids[:, -logits_to_keep:, None]).squeeze(-1).masked_fill(pad, 0.0))
            if compute_entropy:
                entropies.append(-(log_probs.exp() * log_probs).sum(-1).masked_fill(pad, 0.0))
        return torch.cat(logps), torch.cat(entropies) if compute_entropy else None, None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._gathered_rewards = rewards_per_func  # [B*G over all processes, n_reward_funcs]
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        self._batch_targets = [x["target"] for x in inputs] if "target" in inputs[0] else None
        if (self.add_gt or (self.dynamic_sampling and not self.beam_search)) and self._batch_targets is None:
            raise ValueError("add_gt / dynamic_sampling need a 'target' column in the dataset")
        self._rollout_stats = None
        started = time.perf_counter()
        output = super()._generate_and_score_completions(inputs)
        # step-time split (TRL's step_time is the whole step): rollouts, then rewards + reference/old log-probs
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["time/generation_s"].append(self._generate_seconds)
        self._metrics[mode]["time/scoring_reference_s"].append(time.perf_counter() - started - self._generate_seconds)
        self._log_rollout_diagnostics(mode)
        if self.mask_all_zero and self.model.training:
            G = self.num_generations
            all_zero = (self._gathered_rewards == 0).all(dim=1).view(-1, G).all(dim=1)  # [groups overall]
            rows = all_zero.repeat_interleave(G)  # [B*G overall]
            start = self.accelerator.process_index * len(inputs)
            local = rows[start:start + len(inputs)].to(output["completion_mask"].device)  # [B*G local]
            output["completion_mask"] = output["completion_mask"] * (~local).unsqueeze(1).int()
            # dapo normalises by the number of loss tokens: recount without the dropped groups
            output["num_items_in_batch"] = self.accelerator.gather(output["completion_mask"].sum()).sum()
            self._metrics["train"]["frac_groups_all_zero"].append(all_zero.float().mean().item())
        return output

    def _log_rollout_diagnostics(self, mode: str) -> None:
        """rollout/* of this generation batch, averaged over the groups of every process (diagnostics.summarise)."""
        G = self.num_generations if mode == "train" else self.num_generations_eval
        device = self.accelerator.device
        rewards = (self._gathered_rewards * self.reward_weights.to(device)).nansum(dim=1)  # [B*G over all processes]
        self._metrics[mode]["rollout/frac_groups_zero_std"].append(frac_zero_std(rewards, G))
        if self._rollout_stats is not None:  # a dataset with a target column: every process has one
            stats = self.accelerator.gather(self._rollout_stats.to(device))  # [groups over all processes, 2 + levels]
            for key, value in summarise(stats).items():
                self._metrics[mode][key].append(value)
