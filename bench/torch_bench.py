"""torch_bench.py — the peer: the same training workloads in PyTorch, timed the same way.

Mirrors bench_train.c workload for workload: the same layer sizes, batch 128, SGD with
momentum 0.9 at lr 0.01 (cnn-teacher: examples/cnn-teacher.json's network and SGD, read from
the file as bench_train reads it), random data of the same shape, the median of several
repetitions of about --seconds each after a warm-up (with --serve, one repetition per "rep"
line on stdin, so that the driver can alternate them with bench_train's). PyTorch at its
best, as docs/design.md asks: run under /usr/bin/python3 with OPENBLAS_NUM_THREADS=1 (set by
bench/run, before torch loads) and torch.set_num_threads(--threads); gradients set to None
rather than zeroed. Prints one JSON object. A benchmark, never a test.

    /usr/bin/python3 bench/torch_bench.py mlp|kd|cnn|cnn-teacher|kd-epoch [--seconds S] [--reps N]
        [--examples N] [--serve]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

B = 128
POOL = 4096
LR = 0.01
MOMENTUM = 0.9
T = 4.0


def mlp(sizes):
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(nn.Linear(sizes[i], sizes[i + 1]))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def cnn():
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, 10))


def network_from_config(config):
    """The network a MapSage config's `model.layers` describe (config: the parsed JSON), with
    MapSage's defaults (docs/config.md, "Layers": conv2d kernel 3, stride 1, padding
    kernel // 2; maxpool size 2, stride size; dropout p 0.5), on Fashion-MNIST's 1 × 28 × 28
    images. Built from the file rather than written out, so that the peer trains the very
    network our side reads."""
    layers = config["model"]["layers"]
    modules, channels, height, width, features = [], 1, 28, 28, None
    for layer in layers:
        kind = layer["type"]
        if kind == "conv2d":
            kernel, stride = layer.get("kernel", 3), layer.get("stride", 1)
            padding = layer.get("padding", kernel // 2)
            modules.append(nn.Conv2d(channels, layer["out"], kernel, stride=stride, padding=padding))
            channels = layer["out"]
            height = (height + 2 * padding - kernel) // stride + 1
            width = (width + 2 * padding - kernel) // stride + 1
        elif kind == "maxpool":
            size = layer.get("size", 2)
            stride = layer.get("stride", size)
            modules.append(nn.MaxPool2d(size, stride=stride))
            height, width = (height - size) // stride + 1, (width - size) // stride + 1
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "dropout":
            modules.append(nn.Dropout(layer.get("p", 0.5)))
        elif kind == "flatten" or kind == "linear":
            if features is None:
                modules.append(nn.Flatten())
                features = channels * height * width
            if kind == "linear":
                modules.append(nn.Linear(features, layer["out"]))
                features = layer["out"]
        else:
            raise ValueError(f"model.layers: type {kind!r} has no PyTorch counterpart here")
    return nn.Sequential(*modules)


CNN_TEACHER_CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                  "examples", "cnn-teacher.json")


def optimizer_from_config(config):
    """torch.optim.SGD's settings from a MapSage config's `optimizer` (sgd only)."""
    optimizer = config["optimizer"]
    if optimizer["type"] != "sgd":
        raise ValueError(f"optimizer.type: {optimizer['type']!r}: only sgd here")
    return {"lr": optimizer["lr"], "momentum": optimizer.get("momentum", 0.0),
            "weight_decay": optimizer.get("weight_decay", 0.0)}


def read_config(path):
    with open(path) as f:
        return json.load(f)


class KD:
    """Teacher 784-1200-1200-10 (frozen, no grad), student 784-256-128-10, a linear adapter
    128 → 1200 pulling the student's second hidden layer (after its ReLU) toward the
    teacher's (after its ReLU) by MSE, plus cross-entropy and the T² · KL soft-target loss."""

    def __init__(self):
        self.teacher_body = mlp([784, 1200, 1200])
        self.teacher_body.append(nn.ReLU())
        self.teacher_head = nn.Linear(1200, 10)
        for p in list(self.teacher_body.parameters()) + list(self.teacher_head.parameters()):
            p.requires_grad_(False)
        self.student_body = mlp([784, 256, 128])
        self.student_body.append(nn.ReLU())
        self.student_head = nn.Linear(128, 10)
        self.adapter = nn.Linear(128, 1200)
        params = (list(self.student_body.parameters()) + list(self.student_head.parameters())
                  + list(self.adapter.parameters()))
        self.opt = torch.optim.SGD(params, lr=LR, momentum=MOMENTUM)

    def step(self, x, y):
        with torch.no_grad():
            t_hidden = self.teacher_body(x)
            t_logits = self.teacher_head(t_hidden)
        s_hidden = self.student_body(x)
        s_logits = self.student_head(s_hidden)
        task = F.cross_entropy(s_logits, y)
        kd = F.kl_div(F.log_softmax(s_logits / T, dim=1), F.softmax(t_logits / T, dim=1),
                      reduction="batchmean") * (T * T)
        feature = F.mse_loss(self.adapter(s_hidden), t_hidden)
        loss = task + kd + feature
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


class Plain:
    def __init__(self, model, **sgd):
        self.model = model
        self.opt = torch.optim.SGD(model.parameters(), **(sgd or {"lr": LR, "momentum": MOMENTUM}))

    def step(self, x, y):
        loss = F.cross_entropy(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=["mlp", "kd", "cnn", "cnn-teacher", "kd-epoch"])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--examples", type=int, default=55000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--serve", action="store_true",
                        help='print "ready", then run one repetition per "rep" line on stdin')
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    epoch = args.workload == "kd-epoch"
    n = args.examples if epoch else POOL
    shape = (n, 1, 28, 28) if args.workload.startswith("cnn") else (n, 784)
    images = torch.rand(shape)
    labels = torch.randint(0, 10, (n,))
    if args.workload == "mlp":
        runner = Plain(mlp([784, 256, 128, 10]))
    elif args.workload == "cnn":
        runner = Plain(cnn())
    elif args.workload == "cnn-teacher":
        # examples/cnn-teacher.json's network: its padding is the default, kernel // 2 (28 × 28
        # and 14 × 14 planes, as the CNN), plus dropout 0.3 before fc1.
        config = read_config(CNN_TEACHER_CONFIG)
        runner = Plain(network_from_config(config), **optimizer_from_config(config))
    else:
        runner = KD()
    batches = n // B

    def step(i):
        at = (i % batches) * B
        return runner.step(images[at:at + B], labels[at:at + B])

    def run_epoch():
        order = torch.randperm(n)
        last = None
        for start in range(0, n, B):
            idx = order[start:start + B]
            last = runner.step(images[idx], labels[idx])
        return last

    total = 0.0
    i = 0
    start = time.perf_counter()
    while i < 3 or (not epoch and time.perf_counter() - start < 0.2 * args.seconds):
        total += float(step(i).detach())
        i += 1
    rates, cpu_rates, epoch_seconds = [], [], []
    if args.serve:  # repetitions on request, alternated with ours by the driver
        print("ready", flush=True)
        commands = iter(lambda: sys.stdin.readline(), "")
    else:
        commands = iter(["rep"] * args.reps)
    for command in commands:
        if not command.startswith("rep"):
            break
        start, cpu_start = time.perf_counter(), time.process_time()
        samples = 0
        if epoch:
            total += float(run_epoch().detach())
            samples = n
            elapsed = time.perf_counter() - start
            epoch_seconds.append(elapsed)
        else:
            while True:
                loss = step(i)
                i += 1
                samples += B
                elapsed = time.perf_counter() - start
                if elapsed >= args.seconds and samples >= 3 * B:
                    break
            total += float(loss.detach())
        rates.append(samples / elapsed)
        # CPU time of the process (all its threads): on a shared machine, time spent waiting
        # for a core does not count; bench_train reports the same.
        cpu_rates.append(samples / max(time.process_time() - cpu_start, 1e-9))
        if args.serve:
            print(json.dumps({"rep": len(rates) - 1, "samples_per_s": round(rates[-1], 1),
                              "samples_per_cpu_s": round(cpu_rates[-1], 1)}), flush=True)
    blas = sorted({line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()})
    # The kernel set the OpenBLAS it loaded runs (bench/run gives both sides the same one).
    core = "?"
    for path in blas:
        if "libopenblas" in path:
            import ctypes
            library = ctypes.CDLL(path)
            library.openblas_get_corename.restype = ctypes.c_char_p
            core = library.openblas_get_corename().decode()
    out = {
        "workload": args.workload, "batch": B, "reps": args.reps,
        "samples_per_s": statistics.median(rates), "samples_per_s_all": [round(r, 1) for r in rates],
        "samples_per_cpu_s": statistics.median(cpu_rates),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(), "blas_loaded": blas, "openblas_core": core,
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"), "loss_finite": total == total,
    }
    if epoch:
        out["examples"] = n
        out["epoch_seconds"] = statistics.median(epoch_seconds)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
