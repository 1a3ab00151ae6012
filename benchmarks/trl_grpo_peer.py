"""TRL's `GRPOTrainer` on the CPU, timed step by step: the peer of rollax's GRPO in a
side-by-side benchmark.

`trl_grpo_timing(...)` trains a randomly initialised GPT-2 (built from a `GPT2Config`, nothing
downloaded) on character-level prompts with a caller-given reward, and returns seconds per
training step and completions per second over `iterations` steps after `warmup` steps. One step
is one generation batch (`prompts_per_step * num_generations` completions) and one optimizer
update on it, as in rollax's GRPO with `num_iterations=1`.

It needs torch, which the project does not depend on, so it runs in a virtualenv of its own
that also holds rollax (then one program can time both):

    python3.11 -m venv /work/trl-venv
    /work/trl-venv/bin/pip install torch==2.13.0     # a CPU build; see the note below
    /work/trl-venv/bin/pip install trl transformers datasets accelerate -e .
    /work/trl-venv/bin/python benchmarks/trl_grpo_peer.py   # the tiny setting, prints the dict

Note: where a CPU wheel of torch is not at hand, a plain `pip install torch` takes PyPI's CUDA
build (several GB); it runs on the CPU all the same. Checked with trl 1.16.0, transformers
5.25.0, torch 2.13.0+cpu, datasets 5.2.0, accelerate 1.16.0.

What TRL does in a step besides sampling and the update (so part of its figure): it tokenises
the prompt text of every completion (each prompt `num_generations` times), samples with
`model.generate` (a key/value cache, eager PyTorch, batch `prompts_per_step * num_generations`),
decodes the completions back to text for the reward, pads and concatenates prompt and
completion, runs the policy forward once more with gradients on the whole sequence (the
entropy of every completion token is always computed, for its metrics), and reads a dozen
metrics back to Python floats. With `beta > 0` it adds one forward pass of a frozen reference
model. Gradient checkpointing and bf16, on by default in TRL's configs, are turned off here.

Threads: on a loaded machine torch's default (one OpenMP thread per core) can be many times
slower than one thread, since its threads wait on each other while another process holds a
core; pass the same `torch_threads` as the thread count JAX gets on the rollax side.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence

# Nothing is fetched from a hub: the model and the tokenizer are built here, in code.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

PAD, EOS = "<pad>", "<eos>"  # ids 0 and 1, as in rollax's CharTokenizer; characters follow


def char_tokenizer(vocab: Sequence[str]):
    """A `PreTrainedTokenizerFast` that maps each character of `vocab` to one token: `<pad>` is
    id 0, `<eos>` id 1, `vocab[i]` id i + 2 (rollax's `CharTokenizer` numbering).

    A BPE model with no merges and no pre-tokenizer splits any text into its characters; the
    `Fuse` decoder joins decoded tokens with nothing between them.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if any(len(c) != 1 for c in vocab):
        raise ValueError(f"vocab entries must be single characters: {list(vocab)!r}")
    if len(set(vocab)) != len(vocab):
        raise ValueError(f"vocab characters repeat: {list(vocab)!r}")
    ids = {PAD: 0, EOS: 1} | {c: i + 2 for i, c in enumerate(vocab)}
    backend = Tokenizer(models.BPE(vocab=ids, merges=[]))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token=PAD, eos_token=EOS)


def random_gpt2(vocab_size: int, *, width: int, layers: int, heads: int, context: int,
                seed: int):
    """A float32 GPT-2 with fresh weights, no dropout (rollax's transformer has none) and an
    untied output head (rollax's is a separate layer too; GPT-2's has no bias, rollax's has)."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=context, n_embd=width, n_layer=layers,
                        n_head=heads, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                        bos_token_id=1, eos_token_id=1, pad_token_id=0,
                        tie_word_embeddings=False)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).to(torch.float32)


def trl_grpo_timing(*, vocab: list[str], width: int, layers: int, heads: int, context: int,
                    prompts: list[str],
                    reward_func: Callable[..., list[float]],
                    num_generations: int, prompts_per_step: int, completion_length: int,
                    temperature: float, iterations: int, warmup: int, seed: int = 0,
                    beta: float = 0.0, learning_rate: float = 3e-4,
                    max_grad_norm: float | None = None, loss_type: str = "grpo",
                    full_length: bool = True, torch_threads: int | None = None) -> dict:
    """Seconds per GRPO step of TRL's `GRPOTrainer` on the CPU, over `iterations` steps after
    `warmup` steps.

    `reward_func` follows TRL's convention, `f(prompts, completions, **kwargs) -> list[float]`,
    on text. `full_length` (default) makes every completion `completion_length` tokens long
    (EOS is masked until then, through `min_new_tokens`), as rollax's compiled sampler always
    runs the full length; without it a step's cost depends on when EOS comes. `loss_type`,
    `max_grad_norm` (None: no clipping) and `learning_rate` default to rollax's GRPO preset
    for tokens (Adam at 3e-4, no clipping, loss "grpo").

    Returns `seconds_per_iteration` (mean of the timed steps, each from the trainer's
    `on_step_begin` to its `on_step_end`: generation, reward, loss, backward, optimizer),
    `wall_seconds_per_iteration` (end of the last warm-up step to the end of the last step,
    over `iterations`: adds the trainer's work between steps, fetching the next prompts),
    `completions_per_second` (from `seconds_per_iteration`), the per-step list, and versions.
    """
    if iterations < 1 or warmup < 0:
        raise ValueError(f"need iterations >= 1 and warmup >= 0, got {iterations}, {warmup}")
    if not prompts:
        raise ValueError("prompts is empty")
    unknown = sorted(set("".join(prompts)) - set(vocab))
    if unknown:  # the BPE model would drop them without a word
        raise ValueError(f"prompt characters {unknown} are not in the vocabulary")
    longest = max(map(len, prompts)) + completion_length
    if longest > context:
        raise ValueError(f"the longest prompt plus completion_length is {longest} tokens, more "
                         f"than context={context}")

    import accelerate
    import datasets
    import torch
    import transformers
    import trl
    from trl import GRPOConfig, GRPOTrainer

    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    transformers.set_seed(seed)
    datasets.disable_progress_bars()
    # transformers 5 renamed gradient to activation checkpointing; TRL still reads the old name
    warnings.filterwarnings("ignore", message=r".*deprecated and will be removed in v6",
                            category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()

    tokenizer = char_tokenizer(vocab)
    model = random_gpt2(len(vocab) + 2, width=width, layers=layers, heads=heads, context=context,
                        seed=seed)
    steps = warmup + iterations
    # Enough rows that no prompt is needed twice in one generation batch; the trainer's sampler
    # draws `prompts_per_step` distinct rows per step and repeats each `num_generations` times.
    rows = max(len(prompts), prompts_per_step * steps)
    dataset = datasets.Dataset.from_dict({"prompt": [prompts[i % len(prompts)]
                                                     for i in range(rows)]})

    class StepClock(transformers.TrainerCallback):
        """perf_counter at each optimizer step's begin and end."""

        def __init__(self):
            self.begins, self.ends = [], []

        def on_step_begin(self, args, state, control, **kwargs):
            self.begins.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="trl_grpo_peer_") as scratch:
        if beta > 0.0:
            # TRL builds the frozen reference model by loading the policy's `_name_or_path`
            # again; a model made from a config has none, so save the fresh weights locally.
            model.save_pretrained(scratch)
            model.config._name_or_path = scratch
        batch = prompts_per_step * num_generations
        # TRL's configs turn checkpointing on (a second forward pass inside backward); off here.
        # transformers 5 renamed it `activation_checkpointing`, and warns at the old name alone.
        names = {f.name for f in dataclasses.fields(GRPOConfig)}
        no_checkpointing = {name: False for name in ("gradient_checkpointing",
                                                     "activation_checkpointing") if name in names}
        config = GRPOConfig(
            output_dir=scratch,
            use_cpu=True,  # TrainingArguments' `no_cuda` is gone in transformers 5
            bf16=False, fp16=False,  # float32 throughout (TRL's configs default bf16 to on)
            **no_checkpointing,
            # One step = one generation batch of `batch` completions and one optimizer update:
            # the per-device batch counts completions, not prompts.
            per_device_train_batch_size=batch,
            gradient_accumulation_steps=1,
            steps_per_generation=1,  # => generation_batch_size = batch
            num_iterations=1,  # one gradient step per generation batch (mu = 1)
            num_generations=num_generations,
            max_completion_length=completion_length,
            temperature=temperature, top_p=1.0, top_k=0,
            generation_kwargs={"min_new_tokens": completion_length} if full_length else None,
            use_vllm=False,
            use_transformers_continuous_batching=False,
            beta=beta,
            loss_type=loss_type,
            scale_rewards="group",
            epsilon=0.2,
            learning_rate=learning_rate,
            lr_scheduler_type="constant",
            warmup_steps=0,
            weight_decay=0.0,
            max_grad_norm=0.0 if max_grad_norm is None else max_grad_norm,  # 0 = no clipping
            max_steps=steps,
            disable_dropout=True,
            log_completions=False,
            report_to="none",
            logging_strategy="no",
            save_strategy="no",
            eval_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
            dataloader_pin_memory=False,
            seed=seed,
            data_seed=seed,
        )
        trainer = GRPOTrainer(model=model, reward_funcs=reward_func, args=config,
                              train_dataset=dataset, processing_class=tokenizer,
                              callbacks=[clock])
        checkpointing = ("is_activation_checkpointing"
                         if hasattr(type(trainer.model), "is_activation_checkpointing")
                         else "is_gradient_checkpointing")
        if getattr(trainer.model, checkpointing):
            raise RuntimeError("activation checkpointing is still on")
        trainer.train()

    if len(clock.ends) != steps or len(clock.begins) != steps:
        raise RuntimeError(f"expected {steps} steps, timed {len(clock.begins)} begins and "
                           f"{len(clock.ends)} ends")
    step_seconds = [end - begin for begin, end in
                    zip(clock.begins[warmup:], clock.ends[warmup:], strict=True)]
    seconds = statistics.fmean(step_seconds)
    since = clock.ends[warmup - 1] if warmup else clock.begins[0]
    wall = (clock.ends[-1] - since) / iterations
    return {
        "seconds_per_iteration": seconds,
        "completions_per_second": batch / seconds,
        "wall_seconds_per_iteration": wall,
        "step_seconds": step_seconds,
        "iterations": iterations,
        "warmup": warmup,
        "completions_per_iteration": batch,
        "parameters": sum(p.numel() for p in model.parameters()),
        "optimizer": str(config.optim),
        "attn_implementation": model.config._attn_implementation,
        "torch_threads": torch.get_num_threads(),
        "trl_version": trl.__version__,
        "torch_version": torch.__version__,
        "transformers_version": transformers.__version__,
        "accelerate_version": accelerate.__version__,
        "datasets_version": datasets.__version__,
    }


def _tiny_setting(torch_threads: int | None = None) -> dict:
    """A seconds-long smoke setting: 30 characters, a 2-layer width-64 GPT-2, 16 prompts x 8
    completions of 16 tokens per step, 3 timed steps after 1 warm-up step."""
    import random

    vocab = list("abcdefghijklmnopqrstuvwxyz+= .")
    rng = random.Random(0)
    prompts = ["".join(rng.choice(vocab[:26]) for _ in range(8)) + "=" for _ in range(64)]

    def count_a(prompts, completions, **kwargs):  # a trivial reward: how many 'a's
        return [float(c.count("a")) for c in completions]

    return trl_grpo_timing(vocab=vocab, width=64, layers=2, heads=4, context=48,
                           prompts=prompts, reward_func=count_a, num_generations=8,
                           prompts_per_step=16, completion_length=16, temperature=1.0,
                           iterations=3, warmup=1, seed=0, torch_threads=torch_threads)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="TRL GRPO, the tiny smoke setting")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch.set_num_threads (default: torch's own choice)")
    arguments = parser.parse_args()
    start = time.perf_counter()
    result = _tiny_setting(arguments.threads)
    for key, value in result.items():
        print(f"{key}: {value}")
    print(f"total seconds (imports, set-up, {result['warmup'] + result['iterations']} steps): "
          f"{time.perf_counter() - start:.1f}")
