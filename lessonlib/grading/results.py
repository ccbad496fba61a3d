"""Grading results: per check, per question, per file; their text, JSON and CSV forms."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field

__all__ = ["CheckResult", "QuestionResult", "FileResult", "write_json", "write_csv", "format_question",
           "format_file"]

STATUSES = ("passed", "failed", "not_implemented", "missing", "timeout", "crashed", "not_graded")


@dataclass
class CheckResult:
    name: str
    kind: str
    passed: bool
    message: str = ""
    weight: float = 1.0


@dataclass
class QuestionResult:
    id: str
    function: str
    max_points: int
    points: float = 0
    status: str = ""  # one of STATUSES
    message: str = ""
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "QuestionResult":
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        d["checks"] = [CheckResult(**c) for c in d.get("checks", [])]
        return cls(**d)

    def __repr__(self) -> str:  # short, so a notebook cell shows one line after the printed report
        return f"<{self.id} {self.function}: {self.points}/{self.max_points} points, {self.status}>"


@dataclass
class FileResult:
    path: str
    student: str = ""
    notebook: str | None = None
    status: str = ""  # graded | import_error | unknown_notebook | timeout | crashed
    message: str = ""
    questions: list[QuestionResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def score(self) -> int:
        return sum(q.points for q in self.questions)

    @property
    def max_score(self) -> int:
        return sum(q.max_points for q in self.questions)

    @property
    def percent(self) -> float:
        return round(100.0 * self.score / self.max_score, 1) if self.max_score else 0.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(score=self.score, max_score=self.max_score, percent=self.percent)
        return d


# ------------------------------------------------------------------ text
_MARK = {"passed": "ok", "failed": "FAIL", "not_implemented": "TODO", "missing": "MISSING", "timeout": "TIMEOUT",
         "crashed": "CRASH", "not_graded": "--"}


def _indent(text: str, pad: str) -> str:
    return "\n".join(pad + line for line in text.splitlines())


def format_question(q: QuestionResult, detail: bool = True) -> str:
    head = f"  {q.id:<7} {q.function:<30} {q.points:>3}/{q.max_points:<3} {_MARK.get(q.status, q.status)}"
    if q.status == "passed":
        return head + f" ({len(q.checks)} checks)"
    if q.status == "not_implemented":
        return head + "  not implemented yet"
    lines = [head]
    if detail and q.message:
        lines.append(_indent(q.message, " " * 10))
    if detail and q.status == "failed":
        for c in q.checks:
            lines.append(" " * 10 + ("  pass  " if c.passed else "  FAIL  ") + f"[{c.kind}] {c.name}")
    return "\n".join(lines)


def format_file(r: FileResult, detail: bool = True) -> str:
    who = f" ({r.student})" if r.student else ""
    lines = [f"Grading {r.path}{who}: notebook {r.notebook or '?'}"]
    if r.message and r.status != "graded":
        lines.append(_indent(r.message, "  "))
    lines += [format_question(q, detail) for q in r.questions]
    lines.append(f"Score: {r.score}/{r.max_score} ({r.percent:g}%)")
    return "\n".join(lines)


# ------------------------------------------------------------------ files
def write_json(results: FileResult | list[FileResult], path: str) -> None:
    data = results.to_dict() if isinstance(results, FileResult) else [r.to_dict() for r in results]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def write_csv(results: list[FileResult], path: str) -> None:
    """One row per submission: student, file, notebook, status, score, max_score, percent, the points of every
    question (blank when the submission's notebook does not have that question), and the first problem
    (the file's, else the first failing question's) on one line."""
    qids: list[str] = []
    for r in results:
        qids += [q.id for q in r.questions if q.id not in qids]
    qids.sort(key=lambda i: (i.split("_")[0], int(i.split("_")[1])))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["student", "file", "notebook", "status", "score", "max_score", "percent"] + qids + ["message"])
        for r in results:
            pts = {q.id: q.points for q in r.questions}
            msg = r.message or next((q.message for q in r.questions if q.status != "passed" and q.message), "")
            w.writerow([r.student, os.path.basename(r.path), r.notebook or "", r.status, r.score, r.max_score,
                        r.percent] + [pts.get(i, "") for i in qids] + [_one_line(msg)])


def _one_line(msg: str, limit: int = 400) -> str:
    flat = " | ".join(l.strip() for l in msg.splitlines() if l.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
