"""A plain PyTorch implementation of the benchmark shapes, used only by `experiments/benchmark.py`.

PyTorch is not a dependency of the project: `available()` says whether it is installed, and the
benchmark skips the comparison when it is not. The model and losses mirror the JAX side (the
`recola_blstm` and `crossmodal` shapes of the benchmark) with the idioms a PyTorch user would write:
`nn.LSTM(bidirectional=True, batch_first=True)` on the padded batch, `nn.Linear` layers, CCC loss
over all valid frames, batch-hard triplet loss on subsampled frames, `torch.optim.Adam`.

Two variants (`VARIANTS`):
  * 'project': the project's objective term for term: padded frames zeroed after every LSTM layer,
    masked CCC, the triplet term in both directions (target->aux and aux->target) on 256 valid
    frames;
  * 'plain': what a plainer implementation writes: no masks at all (every frame valid), the
    triplet term in one direction (target->aux) on 256 random frames. It does less work than the
    project's objective asks for, so it is the harder comparison.
"""
from __future__ import annotations

import time
from typing import Mapping

import numpy as np


VARIANTS = ("project", "plain")


def available() -> bool:
    """Whether PyTorch can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _modules():
    import torch
    from torch import nn

    class Encoder(nn.Module):
        """2-layer bidirectional LSTM, padded frames zeroed after each layer like the JAX model."""

        def __init__(self, dim: int, hidden: int, num_layers: int):
            super().__init__()
            self.layers = nn.ModuleList(
                nn.LSTM(dim if i == 0 else 2 * hidden, hidden, batch_first=True,
                        bidirectional=True) for i in range(num_layers))

        def forward(self, x, mask):
            for layer in self.layers:
                x = layer(x)[0]
                x = x if mask is None else x * mask
            return x

    class Model(nn.Module):
        """Per-modality encoder and projector, one shared head."""

        def __init__(self, dims: Mapping[str, int], hidden: int, num_layers: int,
                     embedding_dim: int, head_hidden: int):
            super().__init__()
            self.encoders = nn.ModuleDict({m: Encoder(d, hidden, num_layers)
                                           for m, d in dims.items()})
            self.projectors = nn.ModuleDict({m: nn.Linear(2 * hidden, embedding_dim)
                                             for m in dims})
            self.head = nn.Sequential(nn.Linear(embedding_dim, head_hidden), nn.ReLU(),
                                      nn.Linear(head_hidden, 2))

        def forward(self, features, mask):
            emb, out = {}, {}
            for m, x in features.items():
                emb[m] = torch.tanh(self.projectors[m](self.encoders[m](x, mask)))
                out[m] = self.head(emb[m])
            return emb, out

    return torch, Model


def ccc_loss(torch, pred, gold, mask):
    """1 - CCC per dimension over all valid frames (population moments), averaged."""
    m = mask.reshape(-1, 1)
    p, g = pred.reshape(-1, 2), gold.reshape(-1, 2)
    n = m.sum().clamp(min=1.0)
    mp, mg = (p * m).sum(0) / n, (g * m).sum(0) / n
    dp, dg = (p - mp) * m, (g - mg) * m
    cov = (dp * dg).sum(0) / n
    ccc = 2 * cov / ((dp * dp).sum(0) / n + (dg * dg).sum(0) / n + (mp - mg) ** 2 + 1e-8)
    return (1 - ccc).mean()


def triplet_loss(torch, anchors, cands, bins, margin: float):
    """Batch-hard triplet loss on L2-normalised rows, positives = same label bin."""
    a = torch.nn.functional.normalize(anchors, dim=-1)
    c = torch.nn.functional.normalize(cands, dim=-1)
    dist = torch.sqrt(torch.clamp(2 - 2 * a @ c.T, min=1e-12))
    pos = bins[:, None] == bins[None, :]
    d_ap = torch.where(pos, dist, torch.full_like(dist, -float("inf"))).max(1).values
    d_an = torch.where(~pos, dist, torch.full_like(dist, float("inf"))).min(1).values
    ok = pos.any(1) & (~pos).any(1)
    per = torch.relu(d_ap - d_an + margin)
    return torch.where(ok, per, torch.zeros_like(per)).sum() / ok.sum().clamp(min=1)


class TorchStep:
    """One training step of a benchmark shape: forward, backward and Adam update.

    Args:
      dims: modality -> input feature size (one modality: `recola_blstm`; two: `crossmodal`).
      batch: numpy batch in the project's layout (features, masks, targets, target_mask).
      bin_edges: [2, num_bins - 1] quantile edges of arousal and valence (crossmodal only).
      hidden, num_layers, embedding_dim, head_hidden: model sizes.
      align_frames, margin, w_aux, w_align: the crossmodal terms.
      threads: torch intra-op threads (None: torch's default).
      seed: torch's seed.
      variant: one of `VARIANTS`.
    """

    def __init__(self, dims: Mapping[str, int], batch: dict, bin_edges=None, hidden: int = 64,
                 num_layers: int = 2, embedding_dim: int = 64, head_hidden: int = 32,
                 align_frames: int = 256, margin: float = 0.2, w_aux: float = 1.0,
                 w_align: float = 1.0, threads: int | None = None, seed: int = 0,
                 variant: str = "project"):
        if variant not in VARIANTS:
            raise ValueError(f"variant={variant!r}: expected one of {list(VARIANTS)}")
        self.plain = variant == "plain"
        torch, Model = _modules()
        self.torch = torch
        if threads:
            torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.modalities = sorted(dims)
        self.model = Model(dims, hidden, num_layers, embedding_dim, head_hidden)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.features = {m: torch.from_numpy(np.ascontiguousarray(batch["features"][m]))
                         for m in self.modalities}
        self.mask = torch.from_numpy(np.asarray(batch["masks"][self.modalities[0]]))[..., None]
        self.targets = torch.from_numpy(np.asarray(batch["targets"]))
        self.target_mask = torch.from_numpy(np.asarray(batch["target_mask"]))
        if self.plain:  # every frame valid: no mask multiplications anywhere
            self.mask = None
            self.target_mask = torch.ones_like(self.target_mask)
        self.edges = None if bin_edges is None else [
            torch.from_numpy(np.ascontiguousarray(e, np.float32)) for e in np.asarray(bin_edges)]
        self.align_frames, self.margin = align_frames, margin
        self.w_aux, self.w_align = w_aux, w_align

    def _bins(self, labels):
        torch = self.torch
        ids = torch.zeros(labels.shape[0], dtype=torch.long)
        radix = 1
        for k in range(labels.shape[1]):
            bins = torch.bucketize(labels[:, k].contiguous(), self.edges[k], right=True)
            ids = ids + radix * bins
            radix *= len(self.edges[k]) + 1
        return ids

    def loss(self):
        torch = self.torch
        emb, out = self.model(self.features, self.mask)
        target = self.modalities[0]
        total = ccc_loss(torch, out[target], self.targets, self.target_mask)
        for m in self.modalities[1:]:
            total = total + self.w_aux * ccc_loss(torch, out[m], self.targets, self.target_mask)
        if len(self.modalities) > 1:
            flat_valid = torch.nonzero(self.target_mask.reshape(-1) > 0).squeeze(1)
            pick = flat_valid[torch.randperm(len(flat_valid))[:self.align_frames]]
            labels = self.targets.reshape(-1, 2)[pick]
            bins = self._bins(labels)
            rows = {m: e.reshape(-1, e.shape[-1])[pick] for m, e in emb.items()}
            terms = []
            for aux in self.modalities[1:]:
                terms.append(triplet_loss(torch, rows[target], rows[aux], bins, self.margin))
                if not self.plain:
                    terms.append(triplet_loss(torch, rows[aux], rows[target], bins, self.margin))
            total = total + self.w_align * torch.stack(terms).mean()
        return total

    def step(self) -> float:
        """Runs one update; returns the loss."""
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss()
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    def time_steps(self, steps: int, warmup: int = 3) -> list:
        """Seconds per step for `steps` timed steps after `warmup` untimed ones."""
        for _ in range(warmup):
            self.step()
        times = []
        for _ in range(steps):
            start = time.perf_counter()
            self.step()
            times.append(time.perf_counter() - start)
        return times

    def predict_time(self, repeats: int = 3) -> float:
        """Median seconds of one no-grad forward pass of the target modality."""
        torch = self.torch
        target = self.modalities[0]
        times = []
        with torch.no_grad():
            for _ in range(repeats + 1):
                start = time.perf_counter()
                self.model({target: self.features[target]}, self.mask)
                times.append(time.perf_counter() - start)
        return float(np.median(times[1:]))


class TorchProcess:
    """A `TorchStep` in a child process, driven over a pipe.

    PyTorch's and XLA's worker threads both spin for a while after parallel work; in one process
    each steals cores from the other, so the benchmark keeps them in separate processes and runs
    them in turn.

    Args:
      dims, batch, bin_edges, threads, variant: as for `TorchStep`.
      workdir: a directory for the batch file handed to the child.
    """

    def __init__(self, dims: Mapping[str, int], batch: dict, bin_edges, threads: int, workdir: str,
                 variant: str = "project"):
        import json
        import os
        import subprocess
        import sys

        path = os.path.join(workdir, "torch_batch.npz")
        arrays = {f"features/{m}": batch["features"][m] for m in dims}
        arrays.update(mask=batch["masks"][sorted(dims)[0]], targets=batch["targets"],
                      target_mask=batch["target_mask"])
        if bin_edges is not None:
            arrays["bin_edges"] = np.asarray(bin_edges, np.float32)
        np.savez(path, **arrays)
        spec = json.dumps({"dims": dict(dims), "threads": threads, "batch": path,
                           "variant": variant})
        self._proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), spec],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._json = json
        self.ready = self._call("ready")

    def _call(self, command: str):
        self._proc.stdin.write(command + "\n")
        self._proc.stdin.flush()
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the PyTorch child process exited (code {self._proc.wait()})")
        return self._json.loads(line)

    def time_steps(self, steps: int, with_cpu: bool = False):
        """Seconds of each of `steps` training steps (and the child's CPU seconds if asked)."""
        answer = self._call(f"steps {steps}")
        return (answer["times"], answer["cpu"]) if with_cpu else answer["times"]

    def predict_time(self) -> float:
        """Median seconds of one no-grad forward pass of the target modality."""
        return self._call("predict")

    def peak_rss_mb(self) -> float:
        """Peak resident memory of the child process, MiB."""
        return self._call("rss")

    def close(self) -> None:
        self._call("exit")
        self._proc.wait()


def _serve(spec: str) -> None:
    """The child side of `TorchProcess`: reads commands from stdin, answers JSON lines."""
    import json
    import sys

    spec = json.loads(spec)
    data = np.load(spec["batch"])
    dims = spec["dims"]
    batch = {"features": {m: data[f"features/{m}"] for m in dims},
             "masks": {m: data["mask"] for m in dims}, "targets": data["targets"],
             "target_mask": data["target_mask"]}
    edges = data["bin_edges"] if "bin_edges" in data.files else None
    step = TorchStep(dims, batch, bin_edges=edges, threads=spec["threads"],
                     variant=spec["variant"])
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "exit":
            answer = True
        elif cmd[0] == "steps":
            import os

            cpu = sum(os.times()[:2])
            answer = {"times": step.time_steps(int(cmd[1]), warmup=0),
                      "cpu": sum(os.times()[:2]) - cpu}
        elif cmd[0] == "predict":
            answer = step.predict_time()
        elif cmd[0] == "rss":
            with open("/proc/self/status") as f:
                answer = next(int(v.split()[1]) / 1024.0 for v in f if v.startswith("VmHWM:"))
        else:
            answer = {"ready": True, "torch": __import__("torch").__version__}
        print(json.dumps(answer), flush=True)
        if cmd[0] == "exit":
            return


if __name__ == "__main__":
    import sys as _sys

    _serve(_sys.argv[1])
