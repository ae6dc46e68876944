"""cnn_run.py — the whole examples/cnn-teacher.json run against the same training in PyTorch.

Ours: mapsage-worker (a Release build) on the config, its epochs possibly shortened with
--epochs, on Fashion-MNIST, 1 thread (or --threads), checkpoints every epoch into a temporary
directory; wall time around the process, and from its `finished` summary the time inside
training steps (examples / examples_per_s), so that the rest — the evaluations of the
validation and test splits after every epoch, checkpoints, loading — is the difference.
PyTorch: the same network and SGD, built from the same file (torch_bench.network_from_config
and optimizer_from_config: padding kernel // 2 where the config names none, as ours; lr 0.05,
momentum 0.9, weight decay 5e-4), a cosine schedule after a half-epoch warm-up, per step,
batch 128, shuffled, the same evaluations (no_grad, batches of 1,000) and a torch.save each
epoch, on as many threads (torch.set_num_threads; OpenBLAS held to 1, as bench/run does).
Prints one JSON object. A benchmark, never a test.

    /usr/bin/python3 bench/cnn_run.py --worker build-release/mapsage-worker [--epochs N] [--rounds R] [--threads T]

With --rounds R both sides run R times, in turns (ours first, then PyTorch first, …), each
round's ratio printed: the machine's speed drifts over minutes, so one pair run one after the
other can favour either side.
"""
import argparse
import gzip
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time

DATA = "/usr/share/datasets/fashion-mnist"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNN_TEACHER_CONFIG = os.path.join(ROOT, "examples", "cnn-teacher.json")


def ours(worker, epochs, threads):
    config = json.load(open(CNN_TEACHER_CONFIG))
    config["epochs"] = epochs
    with tempfile.TemporaryDirectory() as checkpoints:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
        start = time.monotonic()
        run = subprocess.run([worker, "--experiment", "1", "--threads", str(threads), "--dataset-dir", DATA,
                              "--checkpoint-dir", checkpoints], input=json.dumps(config), env=env,
                             capture_output=True, text=True, timeout=7200)
        wall = time.monotonic() - start
    if run.returncode != 0:
        sys.exit(f"mapsage-worker exited {run.returncode}: {run.stderr[-2000:]}")
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    finished = next(e for e in events if e["event"] == "finished")
    summary = finished["summary"]
    blas = next(e for e in events if e["event"] == "started").get("blas", {})
    step_seconds = summary["examples_per_s"] and 55000 * epochs / summary["examples_per_s"]
    return {"wall_seconds": wall, "run_seconds": summary["seconds"], "step_seconds": step_seconds,
            "other_seconds": summary["seconds"] - step_seconds,
            "test_accuracy": summary.get("final_test_accuracy"), "blas": blas}


def idx(name):
    import numpy as np
    with gzip.open(os.path.join(DATA, name)) as f:
        data = f.read()
    if name.endswith("images-idx3-ubyte.gz"):
        return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def pytorch(epochs, threads):
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    start = time.monotonic()
    train_x, train_y = torch.from_numpy(idx("train-images-idx3-ubyte.gz")), torch.from_numpy(idx("train-labels-idx1-ubyte.gz"))
    test_x, test_y = torch.from_numpy(idx("t10k-images-idx3-ubyte.gz")), torch.from_numpy(idx("t10k-labels-idx1-ubyte.gz"))
    val_x, val_y, train_x, train_y = train_x[55000:], train_y[55000:], train_x[:55000], train_y[:55000]
    from torch_bench import network_from_config, optimizer_from_config  # imports torch: not before main sets OPENBLAS_NUM_THREADS
    config = json.load(open(CNN_TEACHER_CONFIG))
    model = network_from_config(config)
    sgd = optimizer_from_config(config)
    optimizer = torch.optim.SGD(model.parameters(), **sgd)
    steps_per_epoch = math.ceil(55000 / 128)
    total, warmup = epochs * steps_per_epoch, 0.5 * steps_per_epoch
    step_seconds, step, accuracy = 0.0, 0, 0.0

    def evaluate(x, y):
        model.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(x), 1000):
                correct += int((model(x[i:i + 1000]).argmax(1) == y[i:i + 1000]).sum())
        model.train()
        return correct / len(x)

    with tempfile.TemporaryDirectory() as checkpoints:
        for epoch in range(epochs):
            order = torch.randperm(55000)
            began = time.monotonic()
            for i in range(0, 55000, 128):
                lr = sgd["lr"] * (step / warmup if step < warmup else
                             0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup))))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                index = order[i:i + 128]
                loss = F.cross_entropy(model(train_x[index]), train_y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
            step_seconds += time.monotonic() - began
            evaluate(val_x, val_y)
            accuracy = evaluate(test_x, test_y)
            torch.save(model.state_dict(), os.path.join(checkpoints, f"epoch-{epoch + 1:04d}.pt"))
    wall = time.monotonic() - start
    return {"wall_seconds": wall, "step_seconds": step_seconds, "other_seconds": wall - step_seconds,
            "test_accuracy": accuracy, "torch": torch.__version__}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", default=os.path.join(ROOT, "build-release", "mapsage-worker"))
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=1,
                        help="run both sides this many times, the order reversed every other round")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads on both sides (the worker's --threads, torch.set_num_threads)")
    args = parser.parse_args()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before torch loads
    rounds = []
    for r in range(args.rounds):
        load = os.getloadavg()[0]
        if r % 2 == 0:
            a = ours(args.worker, args.epochs, args.threads)
            b = pytorch(args.epochs, args.threads)
        else:
            b = pytorch(args.epochs, args.threads)
            a = ours(args.worker, args.epochs, args.threads)
        rounds.append({"load": [load, os.getloadavg()[0]], "ours": a, "pytorch": b,
                       "wall_ratio": b["wall_seconds"] / a["wall_seconds"],
                       "step_ratio": b["step_seconds"] / a["step_seconds"] if a["step_seconds"] else None})
    result = {"epochs": args.epochs, "threads": args.threads, "rounds": rounds,
              "wall_ratio_median": statistics.median(r["wall_ratio"] for r in rounds)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
