"""BM25 top-10 on a Lagoon segment (persisted postings) next to tantivy, same data, same process.

Data: N short real-text documents (lagoon.index.text.corpus: stdlib docstrings + Debian
changelogs). The corpus yields about 220k chunks of <= 80 words on a stock Debian/Python box; when
that is fewer than N, the same text is re-chunked deterministically into shorter windows of
``--min-words``..``--max-words`` words (seeded lengths, windows of < 40 characters dropped), so the
N documents are ~10-16 words each (the run prints which path it took). Queries: ``sample_queries``
(2-4 distinct words of >= 3 letters from a random document).

Systems:
- Lagoon: ``build_segment`` (one segment, ``fts.text`` holds postings with positions) ->
  ``SegmentReader.from_files`` -> ``SegmentSource(reader, all live)``. Timed three ways:
  * ``execute_query``: ``execute_query(parse_request(body), source)`` with
    ``rank_by=["text", "BM25", q], top_k=10`` (request parsing, query analysis, scoring over the
    decoded postings, top-10, row shaping: the ids of the hits);
  * ``bm25_scores + top-k``: ``source.bm25`` scattered to dense float64[N] + nonzero + ``top_k``;
  * ``top-k kernel``: ``TextIndex.bm25_topk`` (block-max MaxScore over the compressed blocks) +
    ``top_k``: the scoring floor.
- tantivy (Python bindings): fields ``id`` (u64, stored) and ``text`` (default tokenizer: split on
  non-alphanumerics, lowercase, drop tokens >= 40 bytes; no stemming, no stop words, like Lagoon's
  default ``word_v3``), 1 writer thread, 1 GB writer heap (so one segment), commit + wait for merges;
  timed query = ``index.parse_query(<Lagoon's query tokens>, ["text"])`` + ``searcher.search(q, 10)``
  + the stored ``id`` of each hit.

Timing: warm single queries, one at a time, interleaved (query i runs on every system, in a rotating
order, before query i + 1) after ``--warmup`` untimed queries; Python's cyclic GC is frozen after
setup. Reports build time (Lagoon ``build_segment`` vs tantivy add_document loop + commit + merges),
index size (sum of the segment files vs the tantivy directory), p50/p99/QPS and Lagoon / tantivy
ratios, and the top-10 overlap (|Lagoon ∩ tantivy| / 10 per query, mean). Overlap is < 1 because
the tokenizers differ (Lagoon's word_v3 keeps e.g. ``don't`` / ``foo_bar`` as one token where
tantivy splits on every non-alphanumeric, which changes document lengths and df), tantivy's BM25
normalises document length through a 1-byte fieldnorm and scores in f32, and equal scores are
broken differently (Lagoon: lower id; tantivy: doc address).

    .venv/bin/python bench/bm25_bench.py [--n 1000000] [--nq 1000] [--profile 50]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lagoon.index.text.corpus import corpus, sample_queries  # noqa: E402

K = 10
MIN_CHARS = 40

Run = Callable[[int], list[int]]  # query index -> hit ids, best first


# --------------------------------------------------------------------------------------------- data


def documents(n: int, min_words: int, max_words: int, seed: int = 0) -> tuple[list[str], str]:
    """``n`` texts and a one-line description of how they were made."""
    base = corpus(n, seed)
    if len(base) >= n:
        return [d["text"] for d in base], f"corpus({n:,}) as is (chunks of <= 80 words)"
    base = corpus(10**8, seed)  # every chunk the machine has
    rnd = random.Random(seed)
    out: list[str] = []
    for d in base:
        words = d["text"].split()
        i = 0
        while i < len(words):
            w = rnd.randint(min_words, max_words)
            chunk = " ".join(words[i : i + w])
            i += w
            if len(chunk) >= MIN_CHARS:
                out.append(chunk)
    if len(out) < n:
        print(f"warning: only {len(out):,} windows of {min_words}-{max_words} words; using them", flush=True)
    how = (
        f"corpus() has only {len(base):,} chunks of <= 80 words; re-chunked into "
        f"{min(n, len(out)):,} windows of {min_words}-{max_words} words"
    )
    return out[:n], how


def pct(a: np.ndarray, p: float) -> float:
    return float(np.percentile(a, p))


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------- systems


class Lagoon:
    def __init__(self, texts: list[str]) -> None:
        import pyarrow as pa

        from lagoon.format.wal import OP_COLUMN
        from lagoon.index.segment.build import SEQ_COLUMN, build_segment, new_segment_id
        from lagoon.index.segment.read import SegmentReader
        from lagoon.index.sources.segment import SegmentSource
        from lagoon.schema import Schema, apply_schema_update

        n = len(texts)
        self.schema = apply_schema_update(
            Schema(id_type="uint"), {"text": {"type": "string", "full_text_search": True}}
        )
        table = pa.table(
            {
                "id": pa.array(np.arange(n, dtype=np.uint64)),
                SEQ_COLUMN: pa.array(np.ones(n, np.uint64)),
                OP_COLUMN: pa.array(np.zeros(n, np.uint8)),
                "text": pa.array(texts, pa.string()),
            }
        )
        t0 = time.perf_counter()
        built = build_segment(
            table, self.schema, segment_id=new_segment_id(0, random.Random(0)), level=0, seq_from=1, seq_to=1
        )
        self.build_s = time.perf_counter() - t0
        del table
        self.index_bytes = sum(len(b) for b in built.files.values())
        self.fts_bytes = len(built.files["fts.text"])
        self.docs_bytes = len(built.files["docs"])
        self.fts_summary = built.ref.info["files"]["fts.text"] if built.ref.info else {}
        t0 = time.perf_counter()
        reader = SegmentReader.from_files(built.ref, built.files, self.schema)
        self.src = SegmentSource(reader, np.ones(n, bool))
        text = reader.text("text")  # decodes the persisted postings (what the first query pays)
        self.open_s = time.perf_counter() - t0
        assert text.persisted, "the segment's postings were not used"
        self.text = text
        self.reader = reader
        print(
            f"  lagoon: build_segment {self.build_s:.1f} s, open + decode postings {self.open_s:.2f} s, "
            f"files {', '.join(f'{k} {len(v) / 1e6:.1f} MB' for k, v in sorted(built.files.items()))}, "
            f"{text.postings.n_terms:,} terms",
            flush=True,
        )

    def execute(self, queries: list[str]) -> Run:
        from lagoon.query.execute import execute_query
        from lagoon.wire.query import parse_request

        schema, src = self.schema, self.src

        def run(i: int) -> list[int]:
            body = {"rank_by": ["text", "BM25", queries[i]], "top_k": K}
            return [r["id"] for r in execute_query(parse_request(body, schema), src)["rows"]]

        return run

    def raw(self, queries: list[str]) -> Run:
        from lagoon.index.sources.protocol import dense_scores
        from lagoon.index.text.bm25 import top_k

        src = self.src

        def run(i: int) -> list[int]:
            scores = dense_scores(src.num_docs, *src.bm25("text", queries[i], False))
            hits = np.flatnonzero(scores)
            docs, _ = top_k(hits, scores[hits], K)
            return [int(d) for d in docs]  # row = id here (ids 0..n-1, rows sorted by id)

        return run

    def kernel(self, queries: list[str]) -> Run:
        from lagoon.index.text.bm25 import top_k

        index = self.reader.text_index("text")

        def run(i: int) -> list[int]:
            docs, scores = index.bm25_topk(queries[i], K)
            return [int(d) for d in top_k(docs, scores, K)[0]]

        return run


class Tantivy:
    def __init__(self, texts: list[str], workdir: Path) -> None:
        import tantivy

        sb = tantivy.SchemaBuilder()
        sb.add_unsigned_field("id", stored=True)
        sb.add_text_field("text", stored=False)
        self.index = tantivy.Index(sb.build(), path=str(workdir))
        t0 = time.perf_counter()
        writer = self.index.writer(1_000_000_000, 1)
        for i, text in enumerate(texts):
            writer.add_document(tantivy.Document(id=i, text=text))
        writer.commit()
        writer.wait_merging_threads()
        self.build_s = time.perf_counter() - t0
        self.index.reload()
        self.searcher = self.index.searcher()
        self.index_bytes = dir_bytes(workdir)
        print(
            f"  tantivy: index {self.build_s:.1f} s (1 writer thread), {self.searcher.num_segments} segment(s), "
            f"{self.searcher.num_docs:,} docs, {self.index_bytes / 1e6:.1f} MB",
            flush=True,
        )

    def search(self, token_queries: list[str]) -> Run:
        index, searcher = self.index, self.searcher

        def run(i: int) -> list[int]:
            query = index.parse_query(token_queries[i], ["text"])
            hits = searcher.search(query, K).hits
            return [searcher.doc(addr)["id"][0] for _, addr in hits]

        return run


# --------------------------------------------------------------------------------------------- main


def interleaved(runs: dict[str, Run], nq: int, warmup: int) -> dict[str, tuple[list[list[int]], np.ndarray]]:
    names = list(runs)
    for i in range(warmup):
        for name in names:
            runs[name](i % nq)
    found: dict[str, list[list[int]]] = {name: [] for name in names}
    lat: dict[str, list[float]] = {name: [] for name in names}
    for i in range(nq):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            t0 = time.perf_counter()
            ids = runs[name](i)
            lat[name].append((time.perf_counter() - t0) * 1000.0)
            found[name].append(ids)
    return {name: (found[name], np.array(lat[name])) for name in names}


def overlap(a: list[list[int]], b: list[list[int]]) -> float:
    return float(np.mean([len(set(x) & set(y)) / K for x, y in zip(a, b, strict=True)]))


def profile(run: Run, nq: int, top: int = 18) -> str:
    pr = cProfile.Profile()
    pr.enable()
    for i in range(nq):
        run(i)
    pr.disable()
    s = io.StringIO()
    for key in ("cumulative", "tottime"):
        pstats.Stats(pr, stream=s).strip_dirs().sort_stats(key).print_stats(top)
    return s.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--nq", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--min-words", type=int, default=10)
    ap.add_argument("--max-words", type=int, default=16)
    ap.add_argument(
        "--profile", type=int, default=0, help="cProfile this many execute_query calls at the end"
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    texts, how = documents(args.n, args.min_words, args.max_words)
    n = len(texts)
    words = sum(len(t.split()) for t in texts)
    print(
        f"data: {n:,} docs, {words / n:.1f} words/doc avg ({how}); {time.perf_counter() - t0:.1f} s",
        flush=True,
    )
    queries = sample_queries(texts, args.nq, seed=1)
    nq = len(queries)

    with tempfile.TemporaryDirectory(prefix="bm25_bench_") as tmp:
        lagoon = Lagoon(texts)
        analyzer = lagoon.text.analyzer
        token_queries = [" ".join(analyzer.tokens(q)) or "x" for q in queries]
        tant = Tantivy(texts, Path(tmp))
        del texts
        gc.collect()
        gc.freeze()
        runs: dict[str, Run] = {
            "lagoon execute_query": lagoon.execute(queries),
            "lagoon bm25_scores + top-k": lagoon.raw(queries),
            "lagoon top-k kernel": lagoon.kernel(queries),
            "tantivy": tant.search(token_queries),
        }
        t0 = time.perf_counter()
        res = interleaved(runs, nq, args.warmup)
        print(f"timed {nq} queries x {len(runs)} paths in {time.perf_counter() - t0:.1f} s", flush=True)
        tq = res["tantivy"][1]
        t50, t99, tqps = pct(tq, 50), pct(tq, 99), 1000.0 / float(np.mean(tq))
        lines = [
            "",
            f"BM25 top-{K}, {n:,} short real-text docs ({words / n:.1f} words avg), {nq} queries of 2-4 words, "
            "warm single queries, 1 thread, interleaved",
            "",
            f"| system | build s | text index MB | p50 ms | p99 ms | QPS | p50 / tantivy | p99 / tantivy "
            f"| QPS / tantivy | top-{K} overlap vs tantivy |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, (found, lat) in res.items():
            is_t = name == "tantivy"
            build_s = tant.build_s if is_t else lagoon.build_s
            mb = (tant.index_bytes if is_t else lagoon.fts_bytes) / 1e6
            p50, p99, qps = pct(lat, 50), pct(lat, 99), 1000.0 / float(np.mean(lat))
            ov = "-" if is_t else f"{overlap(found, res['tantivy'][0]):.3f}"
            lines.append(
                f"| {name} | {build_s:.1f} | {mb:.1f} | {p50:.3f} | {p99:.3f} | {qps:.0f} "
                f"| {p50 / t50:.2f}x | {p99 / t99:.2f}x | {qps / tqps:.2f}x | {ov} |"
            )
        fs = lagoon.fts_summary
        lines += [
            "",
            f"build ratio Lagoon / tantivy: {lagoon.build_s / tant.build_s:.2f}x "
            f"(Lagoon also: open + decode postings {lagoon.open_s:.2f} s, paid once, not in the build column); "
            f"text index size ratio (Lagoon fts.text / tantivy directory): "
            f"{lagoon.fts_bytes / tant.index_bytes:.2f}x; Lagoon fts.text {lagoon.fts_bytes / 1e6:.1f} MB = head "
            f"{fs.get('head_bytes', 0) / 1e6:.1f} MB (doc lengths, dictionary, page checksums) + postings "
            f"{fs.get('postings_bytes', 0) / 1e6:.1f} MB + positions {fs.get('positions_bytes', 0) / 1e6:.1f} MB; "
            f"tantivy's directory includes its doc store of the stored id field; "
            f"Lagoon's docs file (ids, versions and the raw text) {lagoon.docs_bytes / 1e6:.1f} MB is the document "
            f"store, reported apart (all segment files: {lagoon.index_bytes / 1e6:.1f} MB)",
            f"Lagoon paths agree: execute_query vs top-k kernel top-{K} overlap "
            f"{overlap(res['lagoon execute_query'][0], res['lagoon top-k kernel'][0]):.3f}",
        ]
        print("\n".join(lines), flush=True)
        if args.profile:
            gc.unfreeze()
            print(f"\ncProfile of {args.profile} execute_query calls (by cumulative, then own time):")
            print(profile(runs["lagoon execute_query"], min(args.profile, nq)), flush=True)


if __name__ == "__main__":
    main()
