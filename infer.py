r"""RAG few-shot inference over an elyza-tasks file into a validated output.jsonl.

    python infer.py --model google/gemma-2-27b --adapter results/<run>/adapter \
        --tasks elyza-tasks-100-TV_0.jsonl --reference qa111.jsonl --k 20 \
        --retriever colbert --retriever_model bclavie/JaColBERTv2 --output output.jsonl
    python infer.py ... --dry_run                  # write prompts.jsonl, load no model
    python infer.py ... --resume                   # keep finished tasks, do only the rest
    python infer.py validate --tasks elyza-tasks-100-TV_0.jsonl --output output.jsonl

For each task the k nearest reference QAs become few-shot examples (most similar last), rendered
with the template the adapter was trained with (read from results/<run>/config.yaml), then the
model answers. Greedy by default; banned strings are blocked in every tokenization of them.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from kit.generation import Generation, Sampling, banned_sequences, clean_answer, generate_batch
from kit.io import (KitError, atomic_open, check_output, iter_jsonl, load_yaml, run_main, write_json,
                    write_jsonl)
from kit.models import peak_memory
from kit.tasks import LEAK_MARKERS, load_tasks, validate_output
from rag import load_references

L4_BUDGET_S = 3600  # the competition's limit: 100 tasks within 1 hour on one NVIDIA L4


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="base model (name or folder)")
    p.add_argument("--adapter", help="LoRA adapter folder, e.g. results/<run>/adapter")
    p.add_argument("--tasks", required=True)
    p.add_argument("--reference", help="reference QA JSONL for few-shot examples")
    p.add_argument("--k", type=int, default=20, help="few-shot examples per task")
    p.add_argument("--retriever", choices=("bm25", "colbert"), help="default: colbert with a model")
    p.add_argument("--retriever_model", help="ColBERT checkpoint, e.g. bclavie/JaColBERTv2")
    p.add_argument("--template", help="default: the adapter run's, else alpaca_ja")
    p.add_argument("--output", default="output.jsonl")
    p.add_argument("--csv", help="also write task_id,input,output as CSV")
    p.add_argument("--backend", default="auto", choices=("auto", "hf", "unsloth", "vllm"))
    p.add_argument("--load_in_4bit", action="store_true")
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--max_new_tokens", type=int, default=1024)
    p.add_argument("--context_length", type=int, help="default: the model's max_position_embeddings")
    p.add_argument("--repetition_penalty", type=float, default=1.1)
    p.add_argument("--do_sample", action="store_true")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=50)
    p.add_argument("--seed", type=int, default=3407)
    p.add_argument("--ban", action="append", default=[], help="string never to generate (repeatable)")
    p.add_argument("--stop", action="append", default=[], help="string that ends an answer")
    p.add_argument("--cut_after", help="keep only the text after this marker")
    p.add_argument("--limit", type=int, help="answer only the first N tasks (for timing)")
    p.add_argument("--dry_run", action="store_true", help="write prompts.jsonl, load no model")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--results_dir", default="results")
    p.add_argument("--run_name", help="default: the adapter's run, else infer-<model>")
    p.add_argument("--judge", metavar="CONFIG", help="score the answers with judge.py's settings "
                   "from this YAML when the task file has reference outputs")
    args = p.parse_args(attach_dash_values(argv, ("--ban", "--stop", "--cut_after")))
    check_args(args)
    return args


def attach_dash_values(argv, flags) -> list[str]:
    """`--ban "---"` as written: a value that starts with "-" is joined to its flag (`--ban=---`),
    since argparse would read it as another option."""
    argv, out = list(argv), []
    i = 0
    while i < len(argv):
        if argv[i] in flags and i + 1 < len(argv) and argv[i + 1].startswith("-"):
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def check_args(args) -> None:
    """Values that make no sense are one line each, before anything loads."""
    problems = [f"--{name} must be at least {low} (got {getattr(args, name)})"
                for name, low in (("batch_size", 1), ("max_new_tokens", 1), ("k", 0), ("limit", 1),
                                  ("context_length", 1), ("top_k", 1))
                if getattr(args, name) is not None and getattr(args, name) < low]
    if not args.repetition_penalty > 0:
        problems.append(f"--repetition_penalty must be > 0 (got {args.repetition_penalty})")
    if args.do_sample and not (args.temperature > 0 and 0 < args.top_p <= 1):
        problems.append("--temperature must be > 0 and --top_p in (0, 1] when sampling")
    if any(not text for text in args.ban + args.stop) or args.cut_after == "":
        problems.append("--ban, --stop and --cut_after take non-empty strings")
    if problems:
        raise KitError("; ".join(problems))


def template_for(args) -> str:
    if args.template:
        return args.template
    if args.adapter and (Path(args.adapter).parent / "config.yaml").exists():
        name = load_yaml(Path(args.adapter).parent / "config.yaml").get("template", "alpaca_ja")
        print(f"template: {name} (from the adapter's run config)")
        return name
    return "alpaca_ja"


def build_prompts(args, tasks, references, template, tokenizer, context_length):
    """(prompts, their token counts, drop stats): few-shot prompts that fit the context with
    room for max_new_tokens."""
    from rag import make_retriever

    examples = [[] for _ in tasks]
    if references and args.k > 0:
        retriever = make_retriever(args.retriever, args.retriever_model,
                                   Path(args.results_dir) / ".cache" / "rag")
        retriever.index([r["input"] for r in references])
        for i, task in enumerate(tasks):
            hits = retriever.search(task["input"], args.k)
            examples[i] = [references[index] for index, _ in reversed(hits)]  # most similar last
    prompts, lengths, budgets = [], [], []
    stats = {"examples_dropped_to_fit": 0, "tasks_with_examples_dropped": 0,
             "tasks_with_generation_budget_shrunk": 0, "tasks_with_input_truncated": 0}
    budget = context_length - args.max_new_tokens
    for task, shots in zip(tasks, examples):
        before = len(shots)
        while True:
            prompt = template.prompt(task["input"], examples=shots)
            length = len(tokenizer(prompt).input_ids)
            if length <= budget or not shots:
                break
            shots = shots[1:]  # the least similar example goes first
        stats["examples_dropped_to_fit"] += before - len(shots)
        stats["tasks_with_examples_dropped"] += before > len(shots)
        new_tokens = args.max_new_tokens
        if length > budget:  # too long even alone: every task still gets an answer
            new_tokens = context_length - length
            if new_tokens >= min(MIN_NEW_TOKENS, args.max_new_tokens):
                stats["tasks_with_generation_budget_shrunk"] += 1
                note = f"max_new_tokens {new_tokens} for it"
            else:
                new_tokens = min(MIN_NEW_TOKENS, args.max_new_tokens)
                prompt, length = truncated_prompt(task["input"], template, tokenizer,
                                                  context_length - new_tokens)
                stats["tasks_with_input_truncated"] += 1
                note = f"its input cut in the middle to {length} prompt tokens"
            print(f"warning: {args.tasks}:{task['line']}: task {task['task_id']!r} does not fit "
                  f"{context_length} tokens with max_new_tokens {args.max_new_tokens}; {note}",
                  file=sys.stderr)
        prompts.append(prompt)
        lengths.append(length)
        budgets.append(new_tokens)
    return prompts, lengths, budgets, stats


MIN_NEW_TOKENS = 128  # a task whose prompt leaves less room than this has its input shortened
TRUNCATION_MARKER = "\n……（中略）……\n"


def truncated_prompt(text: str, template, tokenizer, limit: int) -> tuple[str, int]:
    """The task's prompt with the middle of its input cut (marked) so it takes <= limit tokens."""
    keep = len(text)
    while keep > 0:
        keep = keep * 9 // 10
        cut = text[: keep // 2] + TRUNCATION_MARKER + text[len(text) - keep // 2:]
        prompt = template.prompt(cut)
        length = len(tokenizer(prompt).input_ids)
        if length <= limit:
            return prompt, length
    raise KitError(f"the {template.name!r} prompt template alone takes more than {limit} tokens")


def task_keys(tasks) -> list[str]:
    return [json.dumps(t["task_id"]) for t in tasks]


def write_outputs(path, tasks, answers: dict) -> None:
    """The answers so far, in the task file's order, replacing the file atomically."""
    write_jsonl(path, ({"task_id": t["task_id"], "input": t["input"], "output": answers[key]}
                       for t, key in zip(tasks, task_keys(tasks)) if key in answers))


def previous_records(path, tasks) -> dict:
    """{task key: record} from a file this script wrote earlier, for tasks still in the task file;
    unreadable lines are ignored (they are answered again)."""
    known = set(task_keys(tasks))
    if not Path(path).exists():
        return {}
    return {key: record for _, record in iter_jsonl(path, skip_bad_lines=True)
            if isinstance(record, dict) and (key := json.dumps(record.get("task_id"))) in known}


def previous_answers(path, tasks) -> dict:
    """Answers kept by --resume: non-empty, and given for the task's current input."""
    inputs = {key: t["input"] for t, key in zip(tasks, task_keys(tasks))}
    return {key: r["output"] for key, r in previous_records(path, tasks).items()
            if isinstance(r.get("output"), str) and r["output"].strip() and r.get("input") == inputs[key]}


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["validate"]:
        return validate_main(argv[1:])
    args = parse_args(argv)
    from transformers import AutoConfig, AutoTokenizer, set_seed

    from kit.models import check_model_path
    from prompts import TemplateError, load_template

    start = time.perf_counter()
    tasks = load_tasks(args.tasks)[: args.limit]
    try:
        template = load_template(template_for(args))
    except TemplateError as err:
        raise KitError(str(err)) from None
    check_model_path(args.model)
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").exists():
        raise KitError(f"{args.adapter}: no adapter_config.json (not a LoRA adapter folder)")
    inputs = {"--tasks": args.tasks, "--reference": args.reference, "--model": args.model,
              "--adapter": args.adapter, "--judge": args.judge}
    check_output(args.output, inputs)
    if args.csv:
        check_output(args.csv, {**inputs, "--output": args.output}, "--csv")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model, padding_side="left")
        context = args.context_length or getattr(AutoConfig.from_pretrained(args.model),
                                                 "max_position_embeddings", 8192)
    except OSError as err:
        raise KitError(f"{args.model}: cannot load tokenizer/config ({err})") from None
    judge_settings = None
    if args.judge:
        from kit.judging import JudgeSettings

        judge_settings = JudgeSettings.from_mapping(load_yaml(args.judge), args.judge, ignore=vars(args))
    references = load_references(args.reference) if args.reference else []
    overlaps = check_overlaps(args, tasks, references)
    prompts, prompt_tokens, budgets, fit_stats = build_prompts(args, tasks, references, template,
                                                               tokenizer, context)
    run_name = args.run_name or (Path(args.adapter).resolve().parent.name if args.adapter
                                 else f"infer-{Path(args.model).name}")
    run_dir = Path(args.results_dir) / run_name
    if args.dry_run:
        path = run_dir / "prompts.jsonl"
        write_jsonl(path, ({"task_id": task["task_id"], "prompt": prompt, "prompt_tokens": n,
                            "max_new_tokens": budget}
                           for task, prompt, n, budget in zip(tasks, prompts, prompt_tokens, budgets)))
        print(f"dry run: {len(prompts)} prompts → {path} ({fit_stats})")
        return {"prompts": str(path), **fit_stats}
    answers = previous_answers(args.output, tasks) if args.resume else {}
    sidecar = run_dir / "generations.jsonl"
    generation_info = {key: r for key, r in previous_records(sidecar, tasks).items()
                       if key in answers} if args.resume else {}
    todo = [i for i, t in enumerate(tasks) if json.dumps(t["task_id"]) not in answers]
    print(f"{len(tasks)} tasks, {len(tasks) - len(todo)} already answered, {len(todo)} to generate")
    backend = choose_backend(args.backend, len(todo))
    set_seed(args.seed)
    load_start = time.perf_counter()
    if backend == "vllm":
        model = load_vllm(args, context)
    else:
        from kit.models import load_for_generation

        model, model_tokenizer = load_for_generation(args.model, args.adapter, backend,
                                                     args.load_in_4bit)
    load_s = time.perf_counter() - load_start
    stops = list(template.stop) + args.stop
    sampling = Sampling.from_args(args)
    new_tokens, generate_s = 0, 0.0

    def record(i, generation, batch_latency_s):
        key = json.dumps(tasks[i]["task_id"])
        answers[key] = clean_answer(generation.text, stops, template.markers, args.cut_after)
        generation_info[key] = {"task_id": tasks[i]["task_id"], "new_tokens": generation.new_tokens,
                                "stop_reason": generation.stop_reason,
                                "batch_mean_latency_s": round(batch_latency_s, 3)}

    if backend == "vllm":
        generations, generate_s = generate_vllm(model, [prompts[i] for i in todo],
                                                [budgets[i] for i in todo], args, stops)
        new_tokens = sum(g.new_tokens for g in generations)
        for i, generation in zip(todo, generations):
            record(i, generation, generate_s / max(1, len(todo)))
        write_outputs(args.output, tasks, answers)
        write_jsonl(sidecar, (generation_info[k] for k in task_keys(tasks) if k in generation_info))
    else:
        from tqdm import tqdm

        bad_words = banned_sequences(model_tokenizer, args.ban) if args.ban else []
        # similar lengths share a batch; a task whose budget was shrunk to fit goes with its like
        order = sorted(todo, key=lambda i: (-budgets[i], -len(prompts[i])))
        batches = [order[b:b + args.batch_size] for b in range(0, len(order), args.batch_size)]
        batches = [[i for i in batch if budgets[i] == budget] for batch in batches
                   for budget in sorted({budgets[i] for i in batch}, reverse=True)]
        with tqdm(total=len(order), desc="generate", unit="task") as bar:
            for batch in batches:
                tick = time.perf_counter()
                generations = generate_batch(model, model_tokenizer, [prompts[i] for i in batch],
                                             replace(sampling, max_new_tokens=budgets[batch[0]]),
                                             bad_words, stops)
                elapsed = time.perf_counter() - tick
                generate_s += elapsed
                new_tokens += sum(g.new_tokens for g in generations)
                for i, generation in zip(batch, generations):
                    record(i, generation, elapsed / len(batch))
                write_outputs(args.output, tasks, answers)  # a kill loses at most this batch
                write_jsonl(sidecar, (generation_info[k] for k in task_keys(tasks)
                                      if k in generation_info))
                bar.update(len(batch))
    if args.csv:
        with atomic_open(args.csv) as handle:
            writer = csv.writer(handle)
            writer.writerow(["task_id", "input", "output"])
            for task in tasks:
                writer.writerow([task["task_id"], task["input"], answers[json.dumps(task["task_id"])]])
    per_task = generate_s / max(1, len(todo))
    projected = load_s + per_task * 100
    metrics = {"tasks": len(tasks), "generated": len(todo), "backend": backend,
               "batch_size": args.batch_size, "load_s": round(load_s, 2),
               "generate_s": round(generate_s, 2), "total_s": round(time.perf_counter() - start, 2),
               "new_tokens": new_tokens, "tokens_per_s": round(new_tokens / max(generate_s, 1e-9), 1),
               "mean_task_latency_s": round(per_task, 3),
               "truncated_at_max_new_tokens": sum(g["stop_reason"] == "length"
                                                  for g in generation_info.values()),
               **peak_memory(), "projected_100_tasks_s": round(projected, 1),
               "projection_assumption": "load time + 100 × this run's mean per-task generation "
                                        "time, on this machine and batch size; an L4 must be measured",
               **fit_stats, "task_overlaps": overlaps, "argv": argv}
    write_json(run_dir / "infer_metrics.json", metrics)
    verdict = "within" if projected <= L4_BUDGET_S else "OVER"
    print(f"{len(todo)} tasks in {generate_s:.1f} s ({metrics['tokens_per_s']} tokens/s); 100 tasks "
          f"projected {projected:.0f} s here, {verdict} the {L4_BUDGET_S} s budget "
          f"({metrics['projection_assumption']})")
    problems = validate_output(args.tasks, args.output) if not args.limit else []
    if judge_settings is not None:  # a dev run: the rubric scores an empty answer 1, so score it
        empty = [p for p in problems if p.endswith("`output` must be a non-empty string")]
        problems = [p for p in problems if p not in empty]
        if empty:
            print(f"warning: {len(empty)} empty answer(s); the judge scores them 1 (a submission "
                  "with them would be invalid)", file=sys.stderr)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        raise KitError(f"{args.output}: {len(problems)} problem(s) found by the validator")
    print(f"output: {Path(args.output).resolve()}")
    if judge_settings is not None:
        if all(t.get("output") for t in tasks):
            from kit.judging import score_answers

            summary = score_answers(args.output, tasks, judge_settings, run_dir, tasks_label=args.tasks)
            metrics["score"], metrics["ci95"] = summary["score"], summary["ci95"]
            print(f"score {summary['score']} (95% interval {summary['ci95']}) over {summary['n']} "
                  f"tasks → {run_dir / 'score.json'}")
            log_score_to_wandb(run_dir, summary)
        else:
            print(f"warning: {args.tasks} has no reference outputs; --judge skipped", file=sys.stderr)
    return metrics


def check_overlaps(args, tasks, references) -> list[dict]:
    """Rules guard: a few-shot reference or training record that repeats a task's input (a long
    shared span) means the task file leaked into development, which the rules forbid."""
    from kit.io import read_pairs
    from kit.tasks import OVERLAP_CHARS, find_overlaps

    sources = [(f"{args.reference} record {i + 1}", r["input"] + "\n" + r["output"])
               for i, r in enumerate(references)]
    run_config = Path(args.adapter).parent / "config.yaml" if args.adapter else None
    if run_config is not None and run_config.exists():
        for name in load_yaml(run_config).get("data_files") or []:
            if Path(name).is_file():
                sources += [(f"{name} record {i + 1}", r["instruction"] + "\n" + r["response"])
                            for i, r in enumerate(read_pairs(name))]
    overlaps = find_overlaps(tasks, sources)
    for hit in overlaps[:5]:
        print(f"warning: task {hit['task_id']!r} shares {OVERLAP_CHARS}+ characters (or its whole "
              f"input) with "
              f"{hit['source']} ({hit['text']}...): using the task file in development is "
              "forbidden", file=sys.stderr)
    if len(overlaps) > 5:
        print(f"warning: {len(overlaps)} overlaps in all (infer_metrics.json lists them)", file=sys.stderr)
    return overlaps


def log_score_to_wandb(run_dir: Path, summary: dict) -> None:
    """Add the score to the training run's wandb run when it logged to one (offline-safe)."""
    import os

    import re

    # wandb's run folders: [offline-]run-YYYYMMDD_HHMMSS-<id>[-N] (N: a resumed offline run)
    ids = [m.group(1) for p in sorted((run_dir / "wandb").glob("*run-*"))
           if (m := re.search(r"run-\d{8}_\d{6}-([a-z0-9]+)", p.name))] if (run_dir / "wandb").is_dir() else []
    if not ids or os.environ.get("WANDB_MODE") == "disabled":
        return
    import wandb

    run_id = ids[0]
    mode = "online" if os.environ.get("WANDB_API_KEY") and os.environ.get("WANDB_MODE") != "offline" \
        else "offline"
    run = wandb.init(id=run_id, resume="allow", dir=str(run_dir), mode=mode,
                     project=os.environ.get("WANDB_PROJECT", "llm2024-kit"))
    run.summary.update({"judge/score": summary["score"], "judge/ci95_low": (summary["ci95"] or [None])[0],
                        "judge/ci95_high": (summary["ci95"] or [None, None])[1],
                        "judge/prompt_hash": summary["prompt_hash"]})
    run.finish()


VLLM_MIN_TASKS = 20  # below this, vllm's start-up (graph capture) costs more than it saves


def choose_backend(requested: str, tasks: int) -> str:
    """auto: vllm on a GPU for VLLM_MIN_TASKS or more tasks when it imports, else as train.py
    chooses (unsloth on a GPU, hf elsewhere)."""
    if requested == "vllm":
        return "vllm"
    if requested == "auto" and tasks >= VLLM_MIN_TASKS:
        import torch

        if torch.cuda.is_available():
            try:
                import vllm  # noqa: F401

                print("backend: vllm")
                return "vllm"
            except Exception as err:
                print(f"backend: vllm unavailable ({type(err).__name__}); trying the others")
    from kit.models import resolve_backend

    return resolve_backend(requested)


def load_vllm(args, context: int):
    """A vllm engine for the base model (bf16, bitsandbytes 4-bit or a merged folder: vllm reads
    the quantization from its config), with room for the adapter's LoRA rank."""
    from vllm import LLM

    lora = {}
    if args.adapter:
        rank = json.loads((Path(args.adapter) / "adapter_config.json").read_text(encoding="utf-8"))["r"]
        lora = {"enable_lora": True, "max_lora_rank": max(16, rank), "max_loras": 1}
    return LLM(model=args.model, seed=args.seed, dtype="bfloat16", max_model_len=context, **lora)


def generate_vllm(llm, prompts, budgets, args, stops):
    """vllm path (GPU only): greedy or sampled, LoRA if given, the same stops and banned strings."""
    from vllm import SamplingParams
    from vllm.lora.request import LoRARequest

    params = [SamplingParams(max_tokens=budget, repetition_penalty=args.repetition_penalty,
                             temperature=args.temperature if args.do_sample else 0.0, top_p=args.top_p,
                             top_k=args.top_k if args.do_sample else -1, stop=stops,
                             bad_words=args.ban or None, seed=args.seed) for budget in budgets]
    lora = LoRARequest("adapter", 1, args.adapter) if args.adapter else None
    tick = time.perf_counter()
    outputs = llm.generate(prompts, params, lora_request=lora)
    elapsed = time.perf_counter() - tick
    # vllm: finish_reason "length" at max_tokens; stop_reason is the stop string that ended it,
    # an int (EOS id) or None
    return [Generation(o.outputs[0].text, len(o.outputs[0].token_ids),
                       "length" if o.outputs[0].finish_reason == "length" else
                       "stop_string" if isinstance(o.outputs[0].stop_reason, str) else "eos")
            for o in outputs], elapsed


def validate_main(argv) -> list[str]:
    parser = argparse.ArgumentParser(prog="infer.py validate",
                                     description="check an output.jsonl against its task file")
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--output", required=True)
    args = parser.parse_args(argv)
    problems = validate_output(args.tasks, args.output, LEAK_MARKERS)
    for problem in problems:
        print(problem)
    if problems:
        raise KitError(f"{args.output}: {len(problems)} problem(s)")
    print(f"{args.output}: valid ({len(load_tasks(args.tasks))} tasks)")
    return problems


if __name__ == "__main__":
    run_main(main, resume_flag="--resume")
