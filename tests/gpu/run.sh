#!/usr/bin/env bash
# GPU check for the cuda and torch plugins, for a machine with an NVIDIA GPU.
# Builds serve with CUDA (and with a CUDA-enabled libtorch when a PyTorch
# install provides one), serves both plugins on the GPU through a real
# server, compares their answers with a CPU reference, and prints served
# rows/s against raw forward rows/s at batch 1, 32 and 256. Exits non-zero on
# any mismatch. Bounded to 5 minutes.
#   Tolerances: cuda kernel 1e-5 (float32 tanh), torch on cuda 1e-4 (float32;
#   GPU matmuls may use TF32-free but differently ordered reductions).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
exec timeout 300 bash -s "$ROOT" <<'INNER'
set -euo pipefail
ROOT=$1
cd "$ROOT"
nvidia-smi -L || { echo "no GPU visible (nvidia-smi)"; exit 1; }
PY=$(command -v python3)
# A CUDA libtorch: the one inside a pip PyTorch, when there is one.
PREFIX=$($PY -c 'import torch; print(torch.utils.cmake_prefix_path if torch.cuda.is_available() else "")' 2>/dev/null || true)
cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF ${PREFIX:+-DCMAKE_PREFIX_PATH=$PREFIX} \
  -DCMAKE_CUDA_ARCHITECTURES=native >/dev/null
cmake --build build-gpu -j"$(nproc)" >/dev/null
SERVE=$ROOT/build-gpu/serve
export SERVE_STATE_DIR=/tmp/serve-gpu-check
"$SERVE" stop >/dev/null 2>&1 || true
rm -rf "$SERVE_STATE_DIR"
trap '"$SERVE" stop >/dev/null 2>&1 || true' EXIT
URL=$("$SERVE" start --http 127.0.0.1:0 --log-level warn | sed -E 's/.*listening on (http:[^ ]+).*/\1/')
"$SERVE" create-backend gpu_transform cuda --max-batch-size 256 --batch-wait-timeout-ms 2 \
  --config dim=64 --config scale=2 --config shift=0.5 --config max_rows=256
"$SERVE" create-endpoint gpu_transform --backend gpu_transform --route /cuda
TORCH_GPU=0
if [ -f build-gpu/plugins/torch.so ] && $PY -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  "$SERVE" create-backend gpu_mlp torch --max-batch-size 256 --batch-wait-timeout-ms 2 \
    --config model="$ROOT/samples/torch/mlp.pt" --config device=cuda --config input_shape=64
  "$SERVE" create-endpoint gpu_mlp --backend gpu_mlp --route /mlp
  TORCH_GPU=1
else
  echo "torch on GPU skipped: no CUDA-enabled libtorch found (pip install torch brings one)"
fi
$PY - "$URL" "$TORCH_GPU" "$ROOT/samples/torch/mlp.pt" <<'PY'
import json, math, random, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
url, torch_gpu, model_path = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
def post(path, row):
    req = urllib.request.Request(url + path, data=json.dumps(row).encode(), method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())
rng = random.Random(3)
rows = [[rng.uniform(-2, 2) for _ in range(64)] for _ in range(256)]
bad = 0
with ThreadPoolExecutor(64) as pool:
    got = list(pool.map(lambda r: post("/cuda", r), rows))
for row, out in zip(rows, got):
    for x, y in zip(row, out):
        if abs(2 * math.tanh(x) + 0.5 - y) > 1e-5:
            bad += 1
print("cuda plugin: %d of %d values off the CPU reference by more than 1e-5" % (bad, 256 * 64))
table = []
if torch_gpu:
    import torch
    cpu = torch.jit.load(model_path).eval()
    gpu = torch.jit.load(model_path, map_location="cuda").eval()
    with torch.no_grad():
        want = cpu(torch.tensor(rows)).tolist()
    with ThreadPoolExecutor(64) as pool:
        got = list(pool.map(lambda r: post("/mlp", r), rows))
    off = sum(abs(a - b) > 1e-4 for g, w in zip(got, want) for a, b in zip(g, w))
    print("torch plugin on cuda: %d of %d values off the CPU forward by more than 1e-4" % (off, 2560))
    bad += off
    for batch in (1, 32, 256):
        x = torch.randn(batch, 64, device="cuda")
        with torch.inference_mode():
            for _ in range(20): gpu(x)
            torch.cuda.synchronize(); t0 = time.perf_counter(); n = 0
            while time.perf_counter() - t0 < 2:
                gpu(x); n += batch
            torch.cuda.synchronize()
        raw = n / (time.perf_counter() - t0)
        with ThreadPoolExecutor(batch if batch < 64 else 64) as pool:
            t0 = time.perf_counter(); done = 0
            while time.perf_counter() - t0 < 2:
                list(pool.map(lambda r: post("/mlp", r), rows[:max(batch, 1)])); done += max(batch, 1)
        served = done / (time.perf_counter() - t0)
        table.append((batch, served, raw))
    print("%-6s %14s %14s" % ("batch", "served rows/s", "raw rows/s"))
    for b, s, r in table:
        print("%-6d %14.0f %14.0f" % (b, s, r))
sys.exit(1 if bad else 0)
PY
INNER
