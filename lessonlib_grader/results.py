"""Grading results: per check, per question, per file; their text, JSON and CSV forms."""
from __future__ import annotations

import csv
import json
import os
from dataclasses import asdict, dataclass, field

__all__ = ["CheckResult", "QuestionResult", "FileResult", "write_json", "write_csv", "format_question",
           "format_file", "csv_cell", "write_gradebook"]

STATUSES = ("passed", "failed", "flagged", "not_implemented", "missing", "timeout", "crashed", "not_graded")


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
_MARK = {"passed": "ok", "failed": "FAIL", "flagged": "FLAGGED", "not_implemented": "TODO", "missing": "MISSING", "timeout": "TIMEOUT",
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
            w.writerow([csv_cell(r.student), csv_cell(os.path.basename(r.path)), r.notebook or "", r.status, r.score,
                        r.max_score, r.percent] + [pts.get(i, "") for i in qids] + [csv_cell(_one_line(msg))])


_FORMULA = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def csv_cell(value: object) -> object:
    """A cell a spreadsheet shows as text: strings starting like a formula (=, +, -, @, tab, CR) get a
    leading apostrophe (OWASP's advice against CSV injection); numbers pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def write_gradebook(results: list[FileResult], path: str, kind: str = "book") -> None:
    """One row per student (their submissions' questions merged; a question answered twice keeps its best).

    * ``book``: ``student, <question ids...>, total, max_total, percent``;
    * ``canvas``: Canvas's gradebook import: ``Student, ID, SIS User ID, Section, <assignment columns>``;
      the student column holds the submission's name, ID/SIS/Section are left blank for Canvas to match on
      (match by name, or fill them in), one assignment column per notebook named ``lessonlib NN_topic (max)``
      and ``lessonlib total``;
    * ``gradescope``: ``Name, Email, Score`` (Gradescope's "upload scores" CSV; ``Email`` is the student's
      folder/file name when it contains ``@``, else blank).
    """
    if kind not in ("book", "canvas", "gradescope"):
        raise ValueError(f"kind={kind!r} must be 'book', 'canvas' or 'gradescope'")
    best: dict[str, dict[str, float]] = {}
    maxima: dict[str, float] = {}
    nb_of: dict[str, str] = {}
    for r in results:
        row = best.setdefault(r.student or os.path.basename(r.path), {})
        for q in r.questions:
            row[q.id] = max(row.get(q.id, 0), q.points)
            maxima[q.id] = q.max_points
            nb_of[q.id] = r.notebook or ""
    qids = sorted(maxima, key=lambda i: (i.split("_")[0], int(i.split("_")[1])))
    total_max = sum(maxima.values())
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        if kind == "book":
            w.writerow(["student"] + qids + ["total", "max_total", "percent"])
            for s, row in sorted(best.items()):
                tot = round(sum(row.values()), 2)
                w.writerow([csv_cell(s)] + [row.get(i, 0) for i in qids]
                           + [tot, total_max, round(100 * tot / total_max, 1) if total_max else 0])
        elif kind == "canvas":
            nbs = sorted(set(nb_of.values()))
            nb_max = {nb: sum(m for i, m in maxima.items() if nb_of[i] == nb) for nb in nbs}
            w.writerow(["Student", "ID", "SIS User ID", "Section"]
                       + [f"lessonlib {nb} ({nb_max[nb]:g})" for nb in nbs] + [f"lessonlib total ({total_max:g})"])
            w.writerow(["Points Possible", "", "", ""] + [nb_max[nb] for nb in nbs] + [total_max])
            for s, row in sorted(best.items()):
                per = [round(sum(v for i, v in row.items() if nb_of[i] == nb), 2) for nb in nbs]
                w.writerow([csv_cell(s), "", "", ""] + per + [round(sum(row.values()), 2)])
        else:
            w.writerow(["Name", "Email", "Score"])
            for s, row in sorted(best.items()):
                w.writerow([csv_cell(s), csv_cell(s) if "@" in s else "", round(sum(row.values()), 2)])


def _one_line(msg: str, limit: int = 400) -> str:
    flat = " | ".join(l.strip() for l in msg.splitlines() if l.strip())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
