"""Model selection for domain generalization, every rule from one sweep (DomainBed's rules).

A ``task=dg`` run records every periodic evaluation (``results["dg"]["history"]``: per domain
the accuracy of its *in* and *out* split). From the runs of one sweep this module picks, per
method, test domain and trial seed, the test-domain accuracy chosen by:

- ``training_domain``: the (hyper-parameters, step) with the best mean *out* accuracy of the
  source domains (DomainBed ``IIDAccuracySelectionMethod``);
- ``lodo``: leave-one-domain-out: for each hyper-parameter setting and step, the mean accuracy
  of each source domain *v* on its *in* split in the run that also held *v* out (trained on the
  others), over every *v*; the best (hyper-parameters, step) (``LeaveOneOutSelectionMethod``;
  needs those runs: ``sweep=dg_lodo``);
- ``oracle``: the hyper-parameters with the best *out* accuracy of the test domain, at their
  last step (``OracleSelectionMethod``): it looks at the test domain, so it is labelled so;
- ``last``: the default hyper-parameters (``task.hparams_seed=0``), at the last step (the Dassl
  protocol's number).

The test accuracy is the test domain's ``test_split`` accuracy (``in``: DomainBed; ``all``:
Dassl). Tables give per test domain and their average the mean ± sample std over trial seeds
and the 95 % t interval of the mean; the rule is in every caption.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

RULES = ("training_domain", "lodo", "oracle", "last")
RULE_CAPTIONS = {
    "training_domain": "training-domain validation (best mean accuracy on the source domains' "
                       "held-out splits, over hyper-parameters and steps)",
    "lodo": "leave-one-domain-out validation (each source domain held out in turn, over "
            "hyper-parameters and steps)",
    "oracle": "ORACLE: test-domain validation (best accuracy on the test domain's held-out "
              "split, over hyper-parameters, at the last step); looks at the test domain",
    "last": "last step of the default hyper-parameters (no selection)",
}


def is_dg_run(run: Mapping[str, Any]) -> bool:
    return isinstance(run.get("dg"), Mapping) and bool(run["dg"].get("history"))


def method_key(run: Mapping[str, Any]) -> Tuple[str, str, str, str]:
    """What one table row is: ``(dataset, backbone, method, protocol)``; the protocol is the
    sampling and the test split (``balanced/in`` is DomainBed's, ``random/all`` Dassl's)."""
    dg = run["dg"]
    return (str(run.get("dataset")), str(run.get("backbone")), str(run.get("method")),
            f"{dg.get('sampling')}/{dg.get('test_split')}")


@dataclass(frozen=True)
class Choice:
    """One selected number: the test accuracy, the selection score it won with, and where."""

    test: float
    val: float
    hparams_seed: int
    step: int


def _acc(record: Mapping[str, Any], domain: str, split: str) -> Optional[float]:
    a = record["domains"].get(domain)
    return None if a is None else a.get(split)


def _best(candidates: Iterable[Choice]) -> Optional[Choice]:
    """The highest score; the first of equals (DomainBed's argmax / sorted order)."""
    best = None
    for c in candidates:
        if best is None or c.val > best.val:
            best = c
    return best


def run_choice(history: Sequence[Mapping[str, Any]], sources: Sequence[str], test: str,
               split: str, rule: str, hp: int = 0) -> Choice:
    """A rule's choice within one run's evaluations: ``training_domain`` the step with the best
    mean *out* accuracy of ``sources`` (the first of equals); ``oracle`` the last step, scored
    by the test domain's *out* accuracy (the score picks among hyper-parameters); ``last`` the
    last step (no score)."""
    if rule == "training_domain":
        return _best(Choice(_acc(h, test, split),
                            float(np.mean([_acc(h, d, "out") for d in sources])), hp,
                            int(h["step"])) for h in history)
    h = history[-1]
    if rule == "oracle":
        return Choice(_acc(h, test, split), _acc(h, test, "out"), hp, int(h["step"]))
    if rule == "last":
        return Choice(_acc(h, test, split), float("nan"), hp, int(h["step"]))
    raise ValueError(f"unknown selection rule {rule!r} within a run; choose training_domain, "
                     "oracle or last")


def select(runs: Sequence[Mapping[str, Any]], test: str, trial: int, rule: str
           ) -> Optional[Choice]:
    """The rule's choice among ``runs`` (one method's runs) for test domain ``test`` and trial
    seed ``trial``; None when the sweep lacks the runs the rule needs."""
    main = [r for r in runs if r["dg"]["trial_seed"] == trial
            and list(r["dg"]["held_out"]) == [test]]
    if not main:
        return None
    split = main[0]["dg"]["test_split"]
    if rule not in RULES:
        raise ValueError(f"unknown selection rule {rule!r}; choose one of {', '.join(RULES)}")
    if rule == "last":
        default = [r for r in main if int(r["dg"]["hparams_seed"]) == 0]
        if not default:
            return None
        dg = default[0]["dg"]
        return run_choice(dg["history"], dg["source_domains"], test, split, "last")
    per_hp: List[Choice] = []
    for r in sorted(main, key=lambda r: int(r["dg"]["hparams_seed"])):
        hp, dg = int(r["dg"]["hparams_seed"]), r["dg"]
        if rule == "lodo":
            choice = _lodo(runs, r, test, trial, hp, split)
        else:
            choice = run_choice(dg["history"], dg["source_domains"], test, split, rule, hp)
        if choice is not None:
            per_hp.append(choice)
    return _best(per_hp)


def _lodo(runs, main, test: str, trial: int, hp: int, split: str) -> Optional[Choice]:
    sources = list(main["dg"]["source_domains"])
    helpers = {}
    for v in sources:
        match = [r for r in runs if r["dg"]["trial_seed"] == trial
                 and int(r["dg"]["hparams_seed"]) == hp
                 and sorted(r["dg"]["held_out"]) == sorted([test, v])]
        if not match:
            return None
        helpers[v] = {int(h["step"]): h for h in match[0]["dg"]["history"]}
    steps = []
    for h in main["dg"]["history"]:
        step = int(h["step"])
        if not all(step in helpers[v] for v in sources):
            continue
        val = float(np.mean([_acc(helpers[v][step], v, "in") for v in sources]))
        steps.append(Choice(_acc(h, test, split), val, hp, step))
    return _best(steps)


@dataclass
class Cell:
    """Mean, sample std, count and 95 % t interval of per-seed values."""

    values: List[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> Optional[float]:
        return float(np.mean(self.values)) if self.values else None

    @property
    def std(self) -> Optional[float]:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else None

    def interval(self, level: float = 0.95) -> Optional[Tuple[float, float]]:
        if self.n < 2:
            return None
        from scipy import stats

        half = float(stats.t.ppf(0.5 * (1 + level), self.n - 1)) * self.std / math.sqrt(self.n)
        return self.mean - half, self.mean + half

    def text(self) -> str:
        if not self.values:
            return "·"
        out = f"{self.mean:.1f}"
        if self.std is not None:
            low, high = self.interval()
            out += f" ± {self.std:.1f} [{low:.1f}, {high:.1f}]"
        return out + f" (n={self.n})"


def domain_table(runs: Sequence[Mapping[str, Any]], rule: str
                 ) -> Tuple[List[str], Dict[Tuple, Dict[str, Cell]]]:
    """``(domains, rows)``: per method key, per test domain (and ``average``: the mean over the
    domains of each trial seed that has them all), the cell of the rule's choices."""
    dg_runs = [r for r in runs if is_dg_run(r)]
    by_method: Dict[Tuple, List] = defaultdict(list)
    for r in dg_runs:
        by_method[method_key(r)].append(r)
    domains: List[str] = []  # every domain of the dataset: the average needs them all
    for r in dg_runs:
        for d in r["dg"]["domains"]:
            if d not in domains:
                domains.append(d)
    rows: Dict[Tuple, Dict[str, Cell]] = {}
    for key, group in sorted(by_method.items()):
        trials = sorted({int(r["dg"]["trial_seed"]) for r in group})
        per_seed: Dict[int, Dict[str, float]] = defaultdict(dict)
        for test in domains:
            for t in trials:
                c = select(group, test, t, rule)
                if c is not None and c.test is not None:
                    per_seed[t][test] = c.test
        cells = {d: Cell([per_seed[t][d] for t in trials if d in per_seed[t]]) for d in domains}
        cells["average"] = Cell([float(np.mean([per_seed[t][d] for d in domains]))
                                 for t in trials if all(d in per_seed[t] for d in domains)])
        rows[key] = cells
    return domains, rows


def published_rows(dataset: str, protocol: str) -> List[Dict[str, Any]]:
    """The published rows of ``dataset`` under ``protocol`` (``dassl`` | ``domainbed``) from
    ``published_dg.yaml``: ``{"row", "source", "rule", "values": {domain|average: value}}``."""
    from pathlib import Path

    import yaml

    doc = yaml.safe_load((Path(__file__).with_name("published_dg.yaml")).read_text())
    return [dict(row, protocol=p) for p, entries in doc.items() if p == protocol
            for row in entries if row["dataset"] == dataset]


PROTOCOLS = {"random/all": "dassl", "balanced/in": "domainbed"}


def markdown(runs: Sequence[Mapping[str, Any]]) -> str:
    """Per dataset and protocol, one table per rule: the methods' per-domain accuracy (%), with
    the published rows beside them (marked, with the rule they used)."""
    dg_runs = [r for r in runs if is_dg_run(r)]
    if not dg_runs:
        return ""
    lines: List[str] = ["## Domain generalization: test-domain accuracy (%)", ""]
    keys = sorted({(k[0], k[3]) for k in map(method_key, dg_runs)})
    for dataset, protocol in keys:
        subset = [r for r in dg_runs
                  if method_key(r)[0] == dataset and method_key(r)[3] == protocol]
        name = PROTOCOLS.get(protocol, protocol)
        sampling, split = protocol.split("/")
        for rule in RULES:
            domains, rows = domain_table(subset, rule)
            if not any(c.values for cells in rows.values() for c in cells.values()):
                continue
            lines += [f"**{dataset}: {sampling} batches, test split `{split}` (as the {name} "
                      f"protocol); selection: {RULE_CAPTIONS[rule]}.** Mean ± std over trial "
                      "seeds [95 % t interval] (n = seeds); the average needs every domain of "
                      "a seed.",
                      "", "| method | backbone | " + " | ".join(domains) + " | average |",
                      "|---|---|" + "---|" * (len(domains) + 1)]
            for (_ds, backbone, method, _), cells in rows.items():
                lines.append(f"| {method} | {backbone} | "
                             + " | ".join(cells[d].text() for d in domains + ["average"]) + " |")
            for pub in published_rows(dataset, name):
                if pub["rule"] != rule:
                    continue
                vals = pub["values"]
                lines.append(f"| {pub['row']} (published: {pub['source']}) | {pub['backbone']} | "
                             + " | ".join(f"{vals[d]:.1f}" if vals.get(d) is not None else "·"
                                          for d in domains + ["average"]) + " |")
            lines.append("")
    return "\n".join(lines)
