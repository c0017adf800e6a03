"""Train the embedded residual-stream SAEs of a zoo model (seeded, CPU-friendly, a minute or two per layer).

    python -m training.sae --model gpt2-tasks --layers 0 1 2 --d-sae 512 --l1 1.0 \\
        --out mibench/zoo/saes/gpt2-tasks --seed 0 --threads 2

(``mibench/zoo/saes/README.md`` gives the exact commands and numbers of the shipped SAEs.)

Data: the residual stream after each requested block (:class:`~mibench.engine.residual.ResidualRunner`,
the site the causal track intervenes on) at *every real token position* (BOS included, padding excluded)
of ``--prompts`` train-split prompts of every procedural task. Clean prompts only; counterfactual prompts
come from the same templates. Validation: the same from ``--val-prompts`` validation-split prompts, which
hold out the train split's keys (name pairs, operands, ...), so the reported numbers are not memorised.

Model: a standard ReLU SAE, ``f = ReLU((x - b_dec) W_enc + b_enc)``, ``x_hat = f W_dec + b_dec``.

Training: activations are scaled so that their mean squared norm is ``d_model`` (SAELens'
"expected_average_only_in"; it makes ``--l1`` mean the same at every layer and model), and the scale is
folded back into the weights before saving, so the shipped SAE reads raw activations. Loss per row:
``||x - x_hat||^2 + l1 * sum_i f_i ||W_dec[i]||`` (the L1 penalty scaled by decoder norms, so it cannot be
dodged by shrinking f and growing W_dec); after every Adam step the decoder rows are renormalised to unit
norm. ``W_dec`` starts as random unit rows, ``W_enc`` as its transpose, ``b_dec`` as the mean activation.
The L1 coefficient warms up linearly over the first ``--l1-warmup`` of the steps and the learning rate decays
linearly to 0 over the last ``--lr-decay`` of them. Latents that fired on no training row since the last
check are resampled a few times early in training (``--resample-at``; Anthropic's recipe: the decoder row
points at a poorly reconstructed input, the encoder column follows at a fifth of the mean live encoder norm),
which keeps the dead fraction low on these small data sets.

Reproducibility: every random draw comes from ``--seed``; with the same torch version and ``--threads`` the
same command gives the same weights. ``--minutes`` is a safety cap per SAE (recorded if it stops a run).

Output per layer: ``<out>/layer_<L>/cfg.json`` and ``sae_weights.safetensors`` (SAELens layout, see
:mod:`mibench.causal.sae`) and ``training.json``: the command, arguments, wall times, validation (and train)
explained variance, FVU, mean L0 and dead-latent fraction, with and without the BOS position.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from mibench.causal.sae import SAEFeaturizer, reconstruction_stats, save_sae
from mibench.data.registry import load_task
from mibench.data.tokenization import encode
from mibench.engine.residual import ResidualRunner
from mibench.errors import MibenchError
from mibench.models.loading import load_model
from training.zoo import procedural_task_ids


@dataclass
class Activations:
    """Residual-stream vectors ``[N, d]`` of one layer, and which rows are the BOS position."""

    x: Tensor
    is_bos: Tensor


@dataclass
class TrainSettings:
    d_sae: int = 512
    steps: int = 4000
    batch_size: int = 1024
    lr: float = 3e-3
    l1: float = 1.0
    l1_warmup: float = 0.05
    lr_decay: float = 0.2
    resample_at: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4)
    seed: int = 0
    minutes: float = 10.0


# ======================================================================================= activations
def _batches(prompts: list[list[int]], batch_size: int, pad_id: int):
    """Right-padded ``(input_ids, attention_mask)`` batches of the token-id lists, in order."""
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, prompt in enumerate(chunk):
            ids[row, :len(prompt)] = torch.tensor(prompt)
            mask[row, :len(prompt)] = 1
        yield ids, mask


def task_prompts(tokenizer, tasks: list[str], split: str, per_task: int) -> list[list[int]]:
    """Token ids (BOS first) of the first ``per_task`` clean prompts of ``split`` of every task."""
    prompts: list[list[int]] = []
    for task_id in tasks:
        task = load_task(task_id)
        n = min(per_task, task.card.splits.get(split, per_task))
        prompts += [encode(tokenizer, example.prompt) for example in task.examples(split, n)]
    return prompts


@torch.no_grad()
def collect_activations(loaded, layers: list[int], prompts: list[list[int]],
                        batch_size: int = 64) -> dict[int, Activations]:
    """The residual stream after each of ``layers`` at every real token position of ``prompts``."""
    runner = ResidualRunner(loaded.adapter)
    pad_id = loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None else 0
    rows: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    bos: list[Tensor] = []
    for ids, mask in _batches(prompts, batch_size, pad_id):
        real = mask.bool()
        resid = runner.residuals(ids, mask, layers=layers)
        for layer in layers:
            rows[layer].append(resid[layer][real].float().cpu())
        position = torch.arange(ids.shape[1]).expand_as(ids)
        bos.append(position[real] == 0)
    is_bos = torch.cat(bos)
    return {layer: Activations(torch.cat(rows[layer]), is_bos) for layer in layers}


# ========================================================================================== training
class _Trainer:
    """A standard ReLU SAE on activations normalised to mean squared norm ``d`` (folded out at the end)."""

    def __init__(self, x: Tensor, settings: TrainSettings) -> None:
        self.settings = settings
        self.generator = torch.Generator().manual_seed(settings.seed)
        d = x.shape[1]
        self.scale = math.sqrt(d / float(x.pow(2).sum(1).mean()))
        self.x = x * self.scale
        m = settings.d_sae
        w_dec = torch.randn(m, d, generator=self.generator)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_enc = w_dec.T.clone().contiguous().requires_grad_()
        self.W_dec = w_dec.requires_grad_()
        self.b_enc = torch.zeros(m, requires_grad=True)
        self.b_dec = self.x.mean(0).clone().requires_grad_()
        self.params = [self.W_enc, self.b_enc, self.W_dec, self.b_dec]
        self.optimizer = torch.optim.Adam(self.params, lr=settings.lr)
        self.fired = torch.zeros(m, dtype=torch.bool)
        self.order = torch.empty(0, dtype=torch.long)

    def _batch(self) -> Tensor:
        """The next rows of a fresh random permutation per epoch (deterministic given the seed)."""
        n = self.x.shape[0]
        if self.order.numel() < self.settings.batch_size:
            self.order = torch.cat([self.order, torch.randperm(n, generator=self.generator)])
        index, self.order = self.order[:self.settings.batch_size], self.order[self.settings.batch_size:]
        return self.x[index]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)
        return f, f @ self.W_dec + self.b_dec

    def _schedules(self, step: int) -> tuple[float, float]:
        s = self.settings
        progress = step / s.steps
        l1 = s.l1 * min(1.0, progress / s.l1_warmup) if s.l1_warmup > 0 else s.l1
        lr = s.lr * min(1.0, (1.0 - progress) / s.lr_decay) if s.lr_decay > 0 else s.lr
        return l1, lr

    def step(self, step: int) -> dict[str, float]:
        l1_coefficient, lr = self._schedules(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x = self._batch()
        f, x_hat = self._forward(x)
        mse = (x_hat - x).pow(2).sum(1).mean()
        l1 = (f * self.W_dec.norm(dim=1)).sum(1).mean()
        loss = mse + l1_coefficient * l1
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.fired |= (f > 0).any(0)
        return {"mse": float(mse.detach()), "l1": float(l1.detach()), "l0": float((f > 0).float().sum(1).mean())}

    @torch.no_grad()
    def resample_dead(self) -> int:
        """Re-initialise latents that fired on no row since the last call; returns how many."""
        dead = (~self.fired).nonzero().flatten()
        self.fired.zero_()
        if dead.numel() == 0:
            return 0
        sample = self.x[torch.randperm(self.x.shape[0], generator=self.generator)[:16384]]
        _, x_hat = self._forward(sample)
        err = (sample - x_hat).pow(2).sum(1)
        picks = torch.multinomial(err / err.sum(), dead.numel(), replacement=dead.numel() > err.numel(),
                                  generator=self.generator)
        directions = sample[picks] - self.b_dec
        directions /= directions.norm(dim=1, keepdim=True).clamp_min(1e-8)
        alive = torch.ones(self.settings.d_sae, dtype=torch.bool)
        alive[dead] = False
        enc_norm = self.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
        self.W_dec[dead] = directions
        self.W_enc[:, dead] = directions.T * 0.2 * enc_norm
        self.b_enc[dead] = 0.0
        self._reset_adam(dead)
        return int(dead.numel())

    def _reset_adam(self, dead: Tensor) -> None:
        """Zero the optimiser moments of resampled latents, so stale momentum does not undo the reset."""
        slices = {id(self.W_enc): (slice(None), dead), id(self.b_enc): (dead,), id(self.W_dec): (dead,)}
        for param in self.params:
            state = self.optimizer.state.get(param)
            if state and id(param) in slices:
                for key in ("exp_avg", "exp_avg_sq"):
                    state[key][slices[id(param)]] = 0.0

    @torch.no_grad()
    def featurizer(self) -> SAEFeaturizer:
        """The trained SAE on *raw* activations (the normalisation scale folded into the weights)."""
        d, m = self.W_enc.shape
        sae = SAEFeaturizer(d, m, "standard", apply_b_dec_to_input=True)
        sae.W_enc.copy_(self.W_enc * self.scale)
        sae.b_enc.copy_(self.b_enc)
        sae.W_dec.copy_(self.W_dec / self.scale)
        sae.b_dec.copy_(self.b_dec / self.scale)
        return sae


def train_sae(x: Tensor, settings: TrainSettings, log=print) -> tuple[SAEFeaturizer, dict[str, Any]]:
    """Train one SAE on activations ``x`` ``[N, d]``; returns it and a record of the run."""
    if x.ndim != 2 or x.shape[0] < settings.batch_size:
        raise MibenchError(f"need at least batch_size={settings.batch_size} activations [N, d], got {list(x.shape)}")
    torch.manual_seed(settings.seed)
    trainer = _Trainer(x, settings)
    resample_steps = {int(round(p * settings.steps)) for p in settings.resample_at if 0 < p < 1}
    start, history, resampled, stopped_early = time.perf_counter(), [], [], False
    step = 0
    for step in range(1, settings.steps + 1):
        metrics = trainer.step(step)
        if step in resample_steps:
            resampled.append({"step": step, "latents": trainer.resample_dead()})
        if step % max(1, settings.steps // 10) == 0 or step == settings.steps:
            history.append({"step": step, **{k: round(v, 4) for k, v in metrics.items()}})
            log(f"  step {step}: mse {metrics['mse']:.3f}  l1 {metrics['l1']:.3f}  l0 {metrics['l0']:.1f}")
        if time.perf_counter() - start > settings.minutes * 60:
            stopped_early = True
            log(f"  stopped at step {step}: the --minutes cap ({settings.minutes}) was reached")
            break
    record = {"steps": step, "stopped_early": stopped_early, "train_seconds": round(time.perf_counter() - start, 2),
              "normalization_scale": trainer.scale, "resampled": resampled, "history": history}
    return trainer.featurizer(), record


# =============================================================================================== CLI
def _stats(sae: SAEFeaturizer, acts: Activations) -> dict[str, Any]:
    rounded = lambda stats: {k: (round(v, 5) if isinstance(v, float) else v) for k, v in stats.items()}  # noqa: E731
    return {"all_positions": rounded(reconstruction_stats(sae, acts.x)),
            "without_bos": rounded(reconstruction_stats(sae, acts.x[~acts.is_bos]))}


def _settings(args: argparse.Namespace) -> TrainSettings:
    return TrainSettings(d_sae=args.d_sae, steps=args.steps, batch_size=args.batch_size, lr=args.lr, l1=args.l1,
                         l1_warmup=args.l1_warmup, lr_decay=args.lr_decay, resample_at=tuple(args.resample_at),
                         seed=args.seed, minutes=args.minutes)


def run(args: argparse.Namespace, command: str) -> list[dict[str, Any]]:
    """Collect activations once, then train, evaluate and write one SAE per layer."""
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model)
    loaded.model.eval()
    layers = sorted(set(args.layers))
    tasks = args.tasks or procedural_task_ids()
    t0 = time.perf_counter()
    train = collect_activations(loaded, layers, task_prompts(loaded.tokenizer, tasks, "train", args.prompts))
    val = collect_activations(loaded, layers, task_prompts(loaded.tokenizer, tasks, "validation", args.val_prompts))
    collect_seconds = round(time.perf_counter() - t0, 2)
    print(f"{args.model}: {train[layers[0]].x.shape[0]} train / {val[layers[0]].x.shape[0]} validation "
          f"activations per layer from {tasks} ({collect_seconds}s)")
    records = []
    for layer in layers:
        print(f"layer {layer}:")
        sae, record = train_sae(train[layer].x, _settings(args))
        record = {"command": command, "args": vars(args), "model": args.model, "layer": layer,
                  "hook_name": f"blocks.{layer}.hook_resid_post", "tasks": tasks,
                  "n_train_activations": int(train[layer].x.shape[0]),
                  "n_validation_activations": int(val[layer].x.shape[0]), "collect_seconds": collect_seconds,
                  **record, "validation": _stats(sae, val[layer]), "train": _stats(sae, train[layer]),
                  "torch": torch.__version__, "python": platform.python_version(), "threads": args.threads}
        folder = Path(args.out) / f"layer_{layer}"
        save_sae(sae, folder, model_name=args.model, hook_name=record["hook_name"], hook_layer=layer,
                 prepend_bos=True, dataset_path=f"mibench tasks, train split: {', '.join(tasks)}")
        (folder / "training.json").write_text(json.dumps(record, indent=2) + "\n")
        v = record["validation"]["all_positions"]
        print(f"  validation: explained variance {v['explained_variance']:.4f}  L0 {v['l0']:.1f}  "
              f"dead {v['dead_fraction']:.3f}  ({record['train_seconds']}s) -> {folder}")
        records.append(record)
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m training.sae", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="zoo model name or model folder")
    parser.add_argument("--layers", type=int, nargs="+", required=True, help="blocks whose output to train on")
    parser.add_argument("--out", required=True, help="folder that receives layer_<L>/ SAE folders")
    parser.add_argument("--d-sae", type=int, default=TrainSettings.d_sae)
    parser.add_argument("--tasks", nargs="+", default=None, help="task ids (default: every procedural task)")
    parser.add_argument("--prompts", type=int, default=500, help="train-split prompts per task")
    parser.add_argument("--val-prompts", type=int, default=100, help="validation-split prompts per task")
    parser.add_argument("--steps", type=int, default=TrainSettings.steps)
    parser.add_argument("--batch-size", type=int, default=TrainSettings.batch_size)
    parser.add_argument("--lr", type=float, default=TrainSettings.lr)
    parser.add_argument("--l1", type=float, default=TrainSettings.l1,
                        help="L1 coefficient (activations normalised to mean squared norm d_model)")
    parser.add_argument("--l1-warmup", type=float, default=TrainSettings.l1_warmup, help="fraction of steps")
    parser.add_argument("--lr-decay", type=float, default=TrainSettings.lr_decay, help="fraction of steps")
    parser.add_argument("--resample-at", type=float, nargs="*", default=list(TrainSettings.resample_at),
                        help="fractions of training at which dead latents are resampled (none: no resampling)")
    parser.add_argument("--seed", type=int, default=TrainSettings.seed)
    parser.add_argument("--minutes", type=float, default=TrainSettings.minutes, help="safety cap per SAE")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = "python -m training.sae " + shlex.join(argv)
    run(parse_args(argv), command)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
