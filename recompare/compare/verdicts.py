"""The comparison table: one row per question of the source document, each with the
measured values of both families and a verdict written from the numbers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..report.formatting import fmt as _fmt_number
from ..report.formatting import fmt_bytes
from .results import ComparisonResults, ModelRecord, TableRow

#: relative differences below this are reported as "on par"
PAR = 0.05


def _fmt(value: float | None, digits: int = 3) -> str:
    return _fmt_number(value, digits, significant=True, missing="n/a")


@dataclass(frozen=True)
class _Names:
    """Who is who in a results dict: the evaluation and the models the rows compare."""

    evaluation: dict[str, Any]
    models: dict[str, ModelRecord]
    wals: str  #: the WALS family default
    dnn: str  #: the DNN family default
    popularity: str | None  #: the plain popularity baseline, when trained

    @classmethod
    def of(cls, results: ComparisonResults) -> _Names:
        models = results["models"]
        return cls(
            evaluation=results["evaluation"],
            models=models,
            wals=next(n for n, m in models.items() if m["role"] == "wals"),
            dnn=next(n for n, m in models.items() if m["role"] == "dnn"),
            popularity=next((n for n, m in models.items()
                             if m["kind"] == "popularity" and not m["params"].get("by_group")),
                            None),
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


def _relative(a: float, b: float) -> float:
    return (a - b) / max(abs(b), 1e-12)


def _better(label_a: str, a: float | None, label_b: str, b: float | None,
            higher_is_better: bool = True, what: str = "") -> str:
    """Which of two measurements wins, by how much, or "on par" within :data:`PAR`."""
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


def _recall_verdict(names: _Names, protocol: str) -> tuple[float | None, float | None, str]:
    w = names.metric(names.wals, protocol, "recall@20")
    d = names.metric(names.dnn, protocol, "recall@20")
    return w, d, _better("WALS", w, "DNN", d, what="recall@20")


def accuracy_row(names: _Names) -> TableRow | None:
    """Known users (weak protocol): recall and ndcg, with the popularity floor."""
    if not names.has("weak"):
        return None
    w, d, verdict = _recall_verdict(names, "weak")
    p = names.metric(names.popularity, "weak", "recall@20")
    wn = names.metric(names.wals, "weak", "ndcg@20")
    dn = names.metric(names.dnn, "weak", "ndcg@20")
    return {
        "question": "Accuracy",
        "measure": "recall@20 / ndcg@20, known users (weak)",
        "wals": f"{_fmt(w)} / {_fmt(wn)}", "dnn": f"{_fmt(d)} / {_fmt(dn)}",
        "verdict": verdict + (f"; popularity floor {_fmt(p)}" if p is not None else ""),
    }


def query_features_row(names: _Names) -> TableRow | None:
    """Unseen users with history (strong): WALS can only fold the history in."""
    if not names.has("strong"):
        return None
    w, d, verdict = _recall_verdict(names, "strong")
    dnn_features = names.models[names.dnn].get("features") or []
    plain = next((n for n, m in names.models.items() if m["role"] == "features"), None)
    h = names.metric(plain, "strong", "recall@20")
    gain = (f"; features move the DNN from {_fmt(h)} (history only) to {_fmt(d)} "
            f"({_relative(d, h):+.0%})" if h is not None and d is not None else "")
    return {
        "question": "Query features",
        "measure": "recall@20, unseen users with fold-in history (strong)",
        "wals": f"{_fmt(w)} (history fold-in; features unused)",
        "dnn": f"{_fmt(d)} ({' + '.join(dnn_features) or 'history'})",
        "verdict": verdict + gain,
    }


def cold_start_row(names: _Names) -> TableRow | None:
    """Unseen users with features only (cold), against popularity."""
    if not names.has("cold"):
        return None
    w, d, verdict = _recall_verdict(names, "cold")
    p = names.metric(names.popularity, "cold", "recall@20")
    return {
        "question": "Cold start",
        "measure": "recall@20, unseen users with features only (cold)",
        "wals": f"{_fmt(w)} (average of similar users)",
        "dnn": f"{_fmt(d)} (features through the tower)",
        "verdict": verdict + (f"; popularity {_fmt(p)}" if p is not None else ""),
    }


def folding_row(names: _Names) -> TableRow | None:
    """Leakage@10 of each default against the worst variant of its family."""
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
        "measure": f"leakage@10 ({protocol}); worst variant in brackets",
        "wals": cells["wals"],
        "dnn": cells["softmax"],
        "verdict": "; ".join(verdict),
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


def serving_row(names: _Names) -> TableRow | None:
    """Per-query latency (static and computed embeddings) and serving memory."""
    sw, sd = names.models[names.wals].get("serving"), names.models[names.dnn].get("serving")
    if not (sw and sd):
        return None

    def fresh_p50(serving: Any) -> float | None:
        return serving.get("fresh", {}).get("p50_ms")

    return {
        "question": "Serving scalability",
        "measure": "p50 ms per query (static embedding / computed at query time); memory",
        "wals": f"{_fmt(sw['known']['p50_ms'])} / {_fmt(fresh_p50(sw))} ms, "
                f"{fmt_bytes(sw['memory_bytes'])}",
        "dnn": f"{_fmt(sd['known']['p50_ms'])} / {_fmt(fresh_p50(sd))} ms, "
               f"{fmt_bytes(sd['memory_bytes'])}",
        "verdict": _better("WALS", sw["known"]["p50_ms"], "DNN", fresh_p50(sd),
                           higher_is_better=False,
                           what="p50 latency (WALS static, DNN computed per query)"),
    }


def comparison_table(results: ComparisonResults) -> list[TableRow]:
    """One row per question of the source document, with numbers and a verdict.

    A question the data set cannot answer (no such protocol, no groups, serving not
    measured) has no row.
    """
    names = _Names.of(results)
    rows = [accuracy_row(names), query_features_row(names), cold_start_row(names),
            folding_row(names), training_row(names, results), serving_row(names)]
    return [row for row in rows if row is not None]
