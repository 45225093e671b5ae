"""An inference run's answers: what made each one, saved to a progress file after every batch and
to the submission file only when the run is complete (kit.runs.progress_path), so a rerun, a
kill or --limit never loses a finished output.jsonl."""
from __future__ import annotations

import sys
from pathlib import Path

from kit.generation import Generation, clean_answer
from kit.io import atomic_open, iter_jsonl, write_jsonl
from kit.runs import AnswerDir, answers_fingerprint, progress_path, task_key


class Answers:
    """The answers so far and what made each; saved to the progress file after every batch, and
    to --output only when the run is complete, so a finished output is never lost to a rerun."""

    def __init__(self, settings, tasks, out: AnswerDir, template):
        self.settings, self.tasks, self.out = settings, tasks, out
        self.stops, self.markers = list(template.stop) + settings.stop, template.markers
        self.progress, self.made_with = progress_path(settings.output), answers_fingerprint(settings)
        self.output_file = str(Path(settings.output).resolve())
        self.texts, self.info = {}, {}
        if settings.resume:
            self.resume()
        elif self.progress.exists():
            print(f"note: {self.progress} holds an unfinished run's answers; this run starts over "
                  "(--resume continues it)", file=sys.stderr)

    def previous(self, path, tasks=None) -> dict:
        """{task key: record} from a file this script wrote earlier, for tasks still in the task
        file; unreadable lines are ignored (they are answered again)."""
        known = {task_key(t["task_id"]) for t in tasks or self.tasks}
        if not Path(path).exists():
            return {}
        return {key: record for _, record in iter_jsonl(path, skip_bad_lines=True)
                if isinstance(record, dict) and (key := task_key(record.get("task_id"))) in known}

    def answered(self, path, tasks) -> dict:
        """{task key: answer} of an earlier file: non-empty and given for the task's current input."""
        inputs = {task_key(t["task_id"]): t["input"] for t in tasks}
        return {key: r["output"] for key, r in self.previous(path, tasks).items()
                if isinstance(r.get("output"), str) and r["output"].strip() and r.get("input") == inputs[key]}

    def resume(self) -> None:
        """Keep the earlier answers (the progress file's, else the output's) that are non-empty,
        given for the task's current input, and made with these same settings."""
        source = self.progress if self.progress.exists() else self.settings.output
        made = {k: r for k, r in self.previous(self.out.generations).items() if r.get("made_with") == self.made_with}
        earlier = self.answered(source, self.tasks)
        self.texts = {key: text for key, text in earlier.items() if key in made}
        self.info = {key: made[key] for key in self.texts}
        if len(earlier) > len(self.texts):
            print(f"resume: {len(earlier) - len(self.texts)} earlier answer(s) were made with other settings "
                  "(model, adapter, prompts or decoding) and are answered again", file=sys.stderr)

    def todo(self) -> list[int]:
        return [i for i, t in enumerate(self.tasks) if task_key(t["task_id"]) not in self.texts]

    def record(self, indices, generations: list[Generation], seconds: float) -> None:
        for i, generation in zip(indices, generations):
            key = task_key(self.tasks[i]["task_id"])
            self.texts[key] = clean_answer(generation.text, self.stops, self.markers, self.settings.cut_after)
            self.info[key] = {"task_id": self.tasks[i]["task_id"], "new_tokens": generation.new_tokens,
                              "stop_reason": generation.stop_reason,
                              "batch_mean_latency_s": round(seconds / len(indices), 3),
                              "made_with": self.made_with, "output_file": self.output_file}
        self.save()

    def rows(self):
        return [(t, self.texts[task_key(t["task_id"])]) for t in self.tasks if task_key(t["task_id"]) in self.texts]

    def save(self) -> None:
        write_jsonl(self.progress, ({"task_id": t["task_id"], "input": t["input"], "output": text}
                                    for t, text in self.rows()))
        write_jsonl(self.out.generations, (self.info[task_key(t["task_id"])] for t, _ in self.rows()
                                           if task_key(t["task_id"]) in self.info))

    def finish(self, all_tasks) -> None:
        """The complete output: this run's answers, and with --limit the existing output's answers
        for the tasks beyond it, in the task file's order; then the progress file goes."""
        answers = self.answered(self.settings.output, all_tasks) if self.settings.limit else {}
        answers.update((task_key(t["task_id"]), text) for t, text in self.rows())
        write_jsonl(self.settings.output, ({"task_id": t["task_id"], "input": t["input"], "output": answers[key]}
                                           for t in all_tasks if (key := task_key(t["task_id"])) in answers))
        self.progress.unlink(missing_ok=True)

    def write_csv(self, path) -> None:
        import csv

        with atomic_open(path) as handle:
            writer = csv.writer(handle)
            writer.writerow(["task_id", "input", "output"])
            writer.writerows([t["task_id"], t["input"], text] for t, text in self.rows())
