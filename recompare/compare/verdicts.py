"""The comparison table: one row per question of the source document, each with the
measured values of both families and a verdict written from the numbers.

Quality verdicts (accuracy, query features, cold start) come from paired per-query
differences with a 95% confidence interval (:mod:`recompare.evaluate.stats`): a family
wins only when the interval of its difference excludes zero, and each family is held
against the popularity floors.  The folding row is only written where the data's groups
are separated, or on a mirror of the data (:mod:`.folding`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..evaluate.stats import CONFIDENCE, PairedComparison, compare_pairs
from ..report.formatting import fmt as _fmt_number
from ..report.formatting import fmt_bytes
from .results import ComparisonResults, FoldingCheck, ModelRecord, Statistics, TableRow

#: relative gap that counts as a practical difference: "on par" verdicts whose interval
#: reaches beyond it say the data cannot rule such a gap out; cost rows (one run each,
#: no interval) call differences within it "on par"
PAR = 0.05
#: the metrics compared query by query: the table's accuracy measures
PAIRED_METRICS = ("recall@20", "ndcg@20")


def _fmt(value: float | None, digits: int = 3) -> str:
    return _fmt_number(value, digits, significant=True, missing="n/a")


def _diff(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _interval(c: PairedComparison) -> str:
    return f"[{_diff(c['low'])}, {_diff(c['high'])}]"


@dataclass(frozen=True)
class _Names:
    """Who is who in a results dict: the evaluation and the models the rows compare."""

    evaluation: dict[str, Any]
    models: dict[str, ModelRecord]
    wals: str  #: the WALS family default
    dnn: str  #: the DNN family default
    popularity: str | None  #: the plain popularity baseline, when trained
    floors: tuple[str, ...] = ()  #: popularity baselines (plain and by group)
    comparisons: list[PairedComparison] = field(default_factory=list)

    @classmethod
    def of(cls, results: Any) -> _Names:
        models = results["models"]
        floors = tuple(n for n, m in models.items() if m["kind"] == "popularity")
        return cls(
            evaluation=results["evaluation"],
            models=models,
            wals=next(n for n, m in models.items() if m["role"] == "wals"),
            dnn=next(n for n, m in models.items() if m["role"] == "dnn"),
            popularity=next((n for n in floors if not models[n]["params"].get("by_group")),
                            None),
            floors=floors,
            comparisons=list((results.get("statistics") or {}).get("comparisons", [])),
        )

    def has(self, protocol: str) -> bool:
        return protocol in self.evaluation["protocols"]

    def metric(self, model: str | None, protocol: str, name: str) -> float | None:
        """A metric (or folding figure) of a model under a protocol; None if not measured."""
        if model is None:
            return None
        entry = self.evaluation["models"].get(model, {}).get("protocols", {}).get(protocol)
        if not entry or entry.get("status") != "ok":
            return None
        if name in entry.get("metrics", {}):
            return entry["metrics"][name]
        return entry.get("folding", {}).get(name)

    def comparison(self, protocol: str, metric: str, a: str | None, b: str | None
                   ) -> PairedComparison | None:
        """The paired comparison ``a - b``, turned round when it was stored as ``b - a``."""
        for c in self.comparisons:
            if c["protocol"] != protocol or c["metric"] != metric:
                continue
            if (c["a"], c["b"]) == (a, b):
                return c
            if (c["a"], c["b"]) == (b, a):
                flip = {"a": a, "b": b, "mean_a": c["mean_b"], "mean_b": c["mean_a"],
                        "difference": -c["difference"],
                        "low": None if c["high"] is None else -c["high"],
                        "high": None if c["low"] is None else -c["low"]}
                return PairedComparison(**{**c, **flip})  # type: ignore[typeddict-item]
        return None


def comparison_pairs(models: dict[str, ModelRecord]) -> list[tuple[str, str]]:
    """The model pairs the verdicts need: the two defaults, each default against every
    popularity floor, and the DNN against itself without side features."""
    wals = [n for n, m in models.items() if m["role"] == "wals"]
    dnn = [n for n, m in models.items() if m["role"] == "dnn"]
    floors = [n for n, m in models.items() if m["kind"] == "popularity"]
    plain = [n for n, m in models.items() if m["role"] == "features"]
    return ([(w, d) for w in wals for d in dnn] + [(f, p) for f in wals + dnn for p in floors]
            + [(d, p) for d in dnn for p in plain])


def paired_statistics(evaluation: dict[str, Any], models: dict[str, ModelRecord],
                      seed: int = 0, method: str = "bootstrap") -> Statistics:
    """Paired intervals of every pair of :func:`comparison_pairs`, under every protocol.

    Reads the per-query values that ``evaluate_models(..., per_query_metrics=...)`` left
    in ``evaluation`` and removes them, so that the evaluation stays JSON-able.
    """
    from ..evaluate.stats import RESAMPLES

    pairs = comparison_pairs(models)
    comparisons: list[PairedComparison] = []
    for protocol in evaluation["protocols"]:
        per_query = {}
        for name, entry in evaluation["models"].items():
            values = entry["protocols"].get(protocol, {}).pop("per_query", None)
            if values is not None:
                per_query[name] = values
        comparisons += compare_pairs(per_query, protocol, pairs, PAIRED_METRICS,
                                     method=method, seed=seed)
    return Statistics(confidence=CONFIDENCE, method=method, resamples=RESAMPLES, seed=seed,
                      comparisons=comparisons)


def _relative(a: float, b: float) -> float:
    return (a - b) / max(abs(b), 1e-12)


def _better(label_a: str, a: float | None, label_b: str, b: float | None,
            higher_is_better: bool = True, what: str = "") -> str:
    """Which of two single measurements wins, by how much, or "on par" within
    :data:`PAR`: for costs measured once per model, where there is no interval."""
    if a is None or b is None:
        missing = label_a if a is None else label_b
        return f"{missing}: not measurable on this data set"
    if abs(a - b) <= PAR * max(abs(a), abs(b)):
        return f"on par ({what} within {PAR:.0%})"
    winner, wv, lv = (label_a, a, b) if ((a > b) == higher_is_better) else (label_b, b, a)
    if higher_is_better:
        gap = f"+{_relative(wv, lv):.0%}" if lv > 0 else "from zero"
    else:
        gap = f"{lv / wv:.1f}x lower" if wv > 0 else "lower"
    return f"{winner} better: {what} {_fmt(wv)} vs {_fmt(lv)} ({gap})"


def paired_verdict(c: PairedComparison | None, label_a: str, label_b: str) -> str:
    """Who wins a paired comparison: ``a`` or ``b`` when the interval of ``a - b``
    excludes zero, else "on par"; the interval is always quoted."""
    if c is None:
        return f"{label_a} or {label_b}: not measurable on this data set"
    metric = c["metric"]
    if c["low"] is None or c["high"] is None:
        return (f"too few queries ({c['n']}) for an interval: {metric} {_fmt(c['mean_a'])} "
                f"vs {_fmt(c['mean_b'])}")
    level = f"{CONFIDENCE:.0%} CI"
    if c["low"] > 0 or c["high"] < 0:
        a_wins = c["low"] > 0
        winner, wv, lv = ((label_a, c["mean_a"], c["mean_b"]) if a_wins
                          else (label_b, c["mean_b"], c["mean_a"]))
        low, high = (c["low"], c["high"]) if a_wins else (-c["high"], -c["low"])
        gap = f", {_relative(wv, lv):+.0%}" if lv > 0 else ""
        return (f"{winner} better: {metric} {_fmt(wv)} vs {_fmt(lv)}, difference "
                f"{_diff(wv - lv)} ({level} [{_diff(low)}, {_diff(high)}]{gap})")
    text = (f"on par: {metric} {_fmt(c['mean_a'])} vs {_fmt(c['mean_b'])}, difference "
            f"{_diff(c['difference'])} ({level} {_interval(c)} includes 0)")
    scale = max(abs(c["mean_a"]), abs(c["mean_b"]), 1e-12)
    reach = max(abs(c["low"]), abs(c["high"])) / scale
    if reach > PAR:
        text += f"; the data cannot rule out a gap of up to {reach:.0%}"
    return text


def floor_verdict(names: _Names, protocol: str) -> tuple[str, bool]:
    """Each default against the strongest popularity floor (by recall@20) of a protocol.

    Returns the clause and whether neither default beats the floor (interval of the
    difference above zero); ``("", False)`` when no floor was evaluated.
    """
    measured = [(names.metric(f, protocol, "recall@20"), f) for f in names.floors]
    measured = [(v, f) for v, f in measured if v is not None]
    if not measured:
        return "", False
    value, floor = max(measured)
    beats: dict[str, bool] = {}
    parts = []
    for label, model in (("WALS", names.wals), ("DNN", names.dnn)):
        c = names.comparison(protocol, "recall@20", model, floor)
        if c is None or c["low"] is None:
            continue
        beats[label] = c["low"] > 0
        parts.append(f"{label} {_diff(c['difference'])} {_interval(c)}")
    where = f"the {floor} floor ({_fmt(value)}; differences, {CONFIDENCE:.0%} CI: "
    where += ", ".join(parts) + ")"
    if not beats:
        return f"; {floor} floor {_fmt(value)}", False
    winners = [label for label, won in beats.items() if won]
    if not winners:
        return f"neither family beats {where}", True
    if len(winners) == len(beats):
        return f"; both beat {where}", False
    return f"; only {winners[0]} beats {where}", False


def _quality_verdict(names: _Names, protocol: str, extra: str = "") -> str:
    """The WALS-vs-DNN verdict on recall@20 of a protocol, led by the floor clause when
    neither family beats popularity."""
    family = paired_verdict(names.comparison(protocol, "recall@20", names.wals, names.dnn),
                            "WALS", "DNN")
    floor, neither = floor_verdict(names, protocol)
    if neither:
        return f"{floor}; between the two: {family}{extra}"
    return f"{family}{extra}{floor}"


def accuracy_row(names: _Names) -> TableRow | None:
    """Known users (weak protocol): recall and ndcg, against the popularity floors."""
    if not names.has("weak"):
        return None
    w = names.metric(names.wals, "weak", "recall@20")
    d = names.metric(names.dnn, "weak", "recall@20")
    wn = names.metric(names.wals, "weak", "ndcg@20")
    dn = names.metric(names.dnn, "weak", "ndcg@20")
    ndcg = names.comparison("weak", "ndcg@20", names.wals, names.dnn)
    extra = (f"; ndcg@20 WALS - DNN {_diff(ndcg['difference'])} {_interval(ndcg)}"
             if ndcg is not None and ndcg["low"] is not None else "")
    return {
        "question": "Accuracy",
        "measure": "recall@20 / ndcg@20, known users (weak)",
        "wals": f"{_fmt(w)} / {_fmt(wn)}", "dnn": f"{_fmt(d)} / {_fmt(dn)}",
        "verdict": _quality_verdict(names, "weak", extra),
    }


def query_features_row(names: _Names) -> TableRow | None:
    """Unseen users with history (strong): WALS can only fold the history in."""
    if not names.has("strong"):
        return None
    w = names.metric(names.wals, "strong", "recall@20")
    d = names.metric(names.dnn, "strong", "recall@20")
    dnn_features = names.models[names.dnn].get("features") or []
    plain = next((n for n, m in names.models.items() if m["role"] == "features"), None)
    gain = ""
    c = names.comparison("strong", "recall@20", names.dnn, plain)
    # without side features the default is the history-only DNN: nothing to compare
    if c is not None and c["low"] is not None and set(dnn_features) - {"history"}:
        gain = (f"; features move the DNN from {_fmt(c['mean_b'])} (history only) to "
                f"{_fmt(c['mean_a'])}, difference {_diff(c['difference'])} {_interval(c)}")
    return {
        "question": "Query features",
        "measure": "recall@20, unseen users with fold-in history (strong)",
        "wals": f"{_fmt(w)} (history fold-in; features unused)",
        "dnn": f"{_fmt(d)} ({' + '.join(dnn_features) or 'history'})",
        "verdict": _quality_verdict(names, "strong", gain),
    }


def cold_start_row(names: _Names) -> TableRow | None:
    """Unseen users with features only (cold), against popularity."""
    if not names.has("cold"):
        return None
    w = names.metric(names.wals, "cold", "recall@20")
    d = names.metric(names.dnn, "cold", "recall@20")
    return {
        "question": "Cold start",
        "measure": "recall@20, unseen users with features only (cold)",
        "wals": f"{_fmt(w)} (average of similar users)",
        "dnn": f"{_fmt(d)} (features through the tower)",
        "verdict": _quality_verdict(names, "cold"),
    }


def _not_separated_row(check: FoldingCheck) -> TableRow:
    share, limit = _fmt(check["cross_share"]), _fmt(check["threshold"])
    return {
        "question": "Folding",
        "measure": f"true cross-group share ({check['protocol']}), threshold {limit}",
        "wals": "not compared", "dnn": "not compared",
        "verdict": (f"not asked on this data: its groups are not separated (true cross-group "
                    f"share {share} > {limit}), so cross-group recommendations are mostly "
                    "real taste; `compare --folding-mirror` asks the question on coupled "
                    "copies of this data"),
    }


def _where_folding(check: FoldingCheck) -> tuple[str, str]:
    """The measure's suffix and the verdict's note saying where folding was measured."""
    mirror = check["mirror"]
    if check["answered_on"] != "mirror" or mirror is None:
        return "", ""
    where = (f" on {mirror['copies']} coupled copies of this data (cross-rate "
             f"{_fmt(mirror['cross_rate'])})")
    if check["cross_share"] is None:
        why = "this data set has no groups of its own"
    elif check["separated"]:
        why = (f"this data's own groups are separated too (true cross-group share "
               f"{_fmt(check['cross_share'])} <= {_fmt(check['threshold'])})")
    else:
        why = (f"this data's own groups are not separated (true cross-group share "
               f"{_fmt(check['cross_share'])} > {_fmt(check['threshold'])})")
    return where, f"; asked on the mirror (--folding-mirror): {why}"


def folding_row(names: _Names, check: FoldingCheck | None = None) -> TableRow | None:
    """Leakage@10 of each default against the worst variant of its family, where the
    folding question can be asked (see :mod:`recompare.compare.folding`)."""
    if check is not None and check["answered_on"] is None:
        return None if check["cross_share"] is None else _not_separated_row(check)
    if check is not None and check["answered_on"] == "mirror" and check["mirror"]:
        names = _Names.of(check["mirror"])
    where, note = _where_folding(check) if check is not None else ("", "")
    ev = names.evaluation
    if not ev.get("folding"):
        return None
    protocol = "weak" if "weak" in ev["protocols"] else ev["protocols"][0]
    truth = names.metric(names.wals, protocol, "ground_truth_cross_share")
    leak: dict[str, dict[str, float | None]] = {"wals": {}, "softmax": {}}
    for name, model in names.models.items():
        if model["kind"] in leak:
            leak[model["kind"]][name] = names.metric(name, protocol, "leakage@10")
    cells, verdict = {}, []
    for family, label, default in (("wals", "WALS", names.wals),
                                   ("softmax", "DNN", names.dnn)):
        values = leak[family]
        worst = max(((v, n) for n, v in values.items() if v is not None), default=None)
        if worst and values.get(default) is not None:
            verdict.append(f"{label} default leaks {_fmt(values[default])} vs "
                           f"{_fmt(worst[0])} for {worst[1]}")
        cells[family] = (f"{_fmt(values.get(default))} "
                         f"({_fmt(worst[0]) if worst else 'n/a'})")
    if truth is not None:
        verdict.append(f"true cross-group share {_fmt(truth)}")
    return {
        "question": "Folding",
        "measure": f"leakage@10 ({protocol}){where}; worst variant in brackets",
        "wals": cells["wals"],
        "dnn": cells["softmax"],
        "verdict": "; ".join(verdict) + note,
    }


def training_row(names: _Names, results: ComparisonResults) -> TableRow:
    """Training time and memory of both defaults, with the scaling slopes."""
    tw, td = names.models[names.wals]["training"], names.models[names.dnn]["training"]
    families = results.get("scaling", {}).get("families", {})
    slope = {role: families.get(role, {}).get("time_slope") for role in ("wals", "dnn")}
    return {
        "question": "Training scalability",
        "measure": "training time, peak extra memory; log-log slope of time per step vs "
                   "nnz on subsamples (small data: fixed costs dominate; see `bench scaling`)",
        "wals": f"{tw['seconds']:.1f} s, {fmt_bytes(tw['peak_extra_bytes'])}, "
                f"slope {_fmt(slope['wals'], 2)}",
        "dnn": f"{td['seconds']:.1f} s, {fmt_bytes(td['peak_extra_bytes'])}, "
               f"slope {_fmt(slope['dnn'], 2)}",
        "verdict": _better("WALS", tw["seconds"], "DNN", td["seconds"], higher_is_better=False,
                           what="training seconds"),
    }


def _latency(p: Any) -> str:
    """A path's p50: the service time with the wall clock in brackets, or the wall clock."""
    if p is None:
        return _fmt(None)
    if p.cpu_p50_ms is None:
        return _fmt(p.p50_ms)
    return f"{_fmt(p.cpu_p50_ms)} [{_fmt(p.p50_ms)}]"


def serving_row(names: _Names) -> TableRow | None:
    """Per-query latency, like with like: static embeddings of both families, then
    embeddings computed at query time by both, each pair on exact top-k and (with the
    faiss extra) an approximate index; a winner only beyond the noise across rounds."""
    from ..evaluate.latency import PathLatency, latency_verdict

    sw, sd = names.models[names.wals].get("serving"), names.models[names.dnn].get("serving")
    if not (sw and sd and "latency" in sw and "latency" in sd):
        return None

    def path(serving: Any, index: str, which: str) -> PathLatency | None:
        found = serving["latency"]["paths"].get(index, {}).get(which)
        return PathLatency(**found) if found else None

    def cell(serving: Any) -> str:
        parts = []
        for index in ("exact", "ann"):
            static, computed = path(serving, index, "static"), path(serving, index, "computed")
            if static or computed:
                recall = [p.recall for p in (static, computed) if p and p.recall is not None]
                parts.append(f"{_latency(static)} / {_latency(computed)} ms {index}"
                             + (f" (recall {' / '.join(_fmt(r, 2) for r in recall)})"
                                if recall else ""))
        return "; ".join(parts + [fmt_bytes(serving["memory_bytes"])])

    verdicts = []
    for index in ("exact", "ann"):
        for which in ("static", "computed"):
            a, b = path(sw, index, which), path(sd, index, which)
            if a or b:
                verdict = latency_verdict("WALS", a, "DNN", b)["verdict"]
                verdicts.append(f"{which} ({index}): {verdict}")
    if sw.get("ann_missing"):
        verdicts.append(f"ANN not measured: {sw['ann_missing']}")
    threads = sw.get("threads", 1)
    clock = ("p50 service time (thread CPU) [wall] ms per query" if threads == 1
             else "p50 wall ms per query")
    return {
        "question": "Serving scalability",
        "measure": f"{clock}, static / computed-at-query-time embedding, exact and "
                   f"ANN top-k; memory ({threads} thread{'s' * (threads != 1)}, "
                   f"{sw.get('rounds', 3)} interleaved rounds)",
        "wals": cell(sw),
        "dnn": cell(sd),
        "verdict": "; ".join(verdicts),
    }


def comparison_table(results: ComparisonResults) -> list[TableRow]:
    """One row per question of the source document, with numbers and a verdict.

    A question the data set cannot answer (no such protocol, no groups, serving not
    measured) keeps its row, with "n/a" and the reason in the verdict.
    """
    names = _Names.of(results)
    dataset = results.get("dataset", {})
    rows = [accuracy_row(names), query_features_row(names), cold_start_row(names),
            folding_row(names, results.get("folding")), training_row(names, results),
            serving_row(names)]
    return [row if row is not None else _unanswered(question, _why_not(question, dataset))
            for question, row in zip(QUESTIONS, rows)]


#: the source document's questions, in the order of the table's rows
QUESTIONS = ("Accuracy", "Query features", "Cold start", "Folding", "Training scalability",
             "Serving scalability")


def _why_not(question: str, dataset: dict) -> str:
    """Why the data set cannot answer ``question`` (a row is never silently missing)."""
    split = (dataset.get("split") or {}).get("kind")
    if split is None:
        return "this data set has no split; prepare it with --split"
    protocols = set(dataset.get("protocols") or ())
    no_heldout = (f"the {split} split has no held-out users; use --split both (or users) "
                  "to ask it")
    if question == "Query features" and "strong" not in protocols:
        return no_heldout
    if question == "Cold start":
        if not dataset.get("user_features"):
            return "no user features in this data: cold users have nothing to go on"
        if "cold" not in protocols:
            return no_heldout
    if question == "Folding":
        return "no item groups in this data, and --folding-mirror was not asked"
    if question == "Accuracy" and "weak" not in protocols:
        return f"the {split} split has no test interactions for known users"
    return "not measured in this run"


def _unanswered(question: str, reason: str) -> TableRow:
    return {"question": question, "measure": "-", "wals": "n/a", "dnn": "n/a",
            "verdict": f"not answered: {reason}"}
