"""Shared helpers for the kit's scripts: JSONL/YAML I/O, atomic writes, user-facing errors, and
model loading (unsloth on a GPU, transformers + peft + bitsandbytes elsewhere).

Heavy libraries are imported inside the functions that need them, so every script's `--help`
stays instant and the CPU path never touches GPU-only packages.
"""
from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


class KitError(Exception):
    """An error in the user's input or setup; scripts print it without a traceback and exit 2."""


def run_main(main, argv=None) -> None:
    """Call `main(argv)`, turning a KitError into a one-line message and exit status 2."""
    import sys

    try:
        main(argv)
    except KitError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", errors: str = "strict"):
    """Open a temporary file beside `path`; rename it over `path` only if the block succeeds.

    A crash or an exception inside the block leaves no partial file behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, errors=None if "b" in mode else errors) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# A lone surrogate can't be UTF-8 encoded; inside a JSON string its escape \udXXX is valid JSON,
# so JSONL files are opened with this error handler and such text round-trips unchanged.
JSONL_ERRORS = "backslashreplace"


def dumps_line(row: dict) -> str:
    return json.dumps(row, ensure_ascii=False) + "\n"


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> int:
    """Write rows as UTF-8 JSONL (real Japanese, not \\u escapes) atomically; return the count."""
    count = 0
    with atomic_open(path, errors=JSONL_ERRORS) as handle:
        for row in rows:
            handle.write(dumps_line(row))
            count += 1
    return count


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_open(path) as handle:
        json.dump(obj, handle, ensure_ascii=False, indent=2)
        handle.write("\n")


def iter_jsonl(path: str | os.PathLike, skip_bad_lines: bool = False, bad_lines: list | None = None
               ) -> Iterator[tuple[int, Any]]:
    """Yield (line_number, object) for each non-blank line; a UTF-8 BOM is accepted.

    A line that is not valid JSON raises KitError naming file and line, or, with
    `skip_bad_lines`, is appended to `bad_lines` as (line_number, message) and skipped.
    """
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such file")
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, 1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                yield line_no, json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                message = f"{path}:{line_no}: not valid JSON ({err})"
                if not skip_bad_lines:
                    raise KitError(message) from None
                if bad_lines is not None:
                    bad_lines.append((line_no, message))


def read_jsonl(path: str | os.PathLike) -> list[Any]:
    return [obj for _, obj in iter_jsonl(path)]


def load_yaml(path: str | os.PathLike) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: no such config file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise KitError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise KitError(f"{path}: expected a mapping of keys to values at the top level")
    return data


def check_keys(given: Iterable[str], valid: Iterable[str], where: str) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise KitError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys are: "
                       f"{', '.join(sorted(valid))}")


def pair_from_record(record: Any) -> tuple[str, str] | None:
    """(instruction, response) from a magpie conversation or a flat record; None if it has none.

    Magpie: instruction = first `user` turn, response = first `assistant` turn, "" if absent.
    Flat: `instruction`/`response` or `input`/`output`.
    """
    if not isinstance(record, dict):
        return None
    turns = record.get("conversations")
    if isinstance(turns, list):
        instruction = next((t.get("content") for t in turns
                            if isinstance(t, dict) and t.get("role") == "user"), "")
        response = next((t.get("content") for t in turns
                         if isinstance(t, dict) and t.get("role") == "assistant"), "")
    elif "instruction" in record or "response" in record:
        instruction, response = record.get("instruction", ""), record.get("response", "")
    elif "input" in record or "output" in record:
        instruction, response = record.get("input", ""), record.get("output", "")
    else:
        return None
    instruction = "" if instruction is None else instruction
    response = "" if response is None else response
    if not isinstance(instruction, str) or not isinstance(response, str):
        return None
    if not instruction and not response:
        return None
    return instruction, response



def read_pairs(path) -> list[dict]:
    """{instruction, response, context} per record of a QA JSONL file (instruction/response or
    input/output); a record missing either, or an empty file, is an error naming file and line."""
    rows = []
    for line_no, record in iter_jsonl(path):
        pair = pair_from_record(record)
        if pair is None or not pair[0].strip() or not pair[1].strip():
            raise KitError(f"{path}:{line_no}: record needs a non-empty instruction/response "
                           "(or input/output)")
        context = record.get("context") if isinstance(record.get("context"), str) else None
        rows.append({"instruction": pair[0], "response": pair[1], "context": context})
    if not rows:
        raise KitError(f"{path}: no records")
    return rows

# ---------------------------------------------------------------------------------------------
# Model loading: unsloth on a CUDA GPU, transformers + peft + bitsandbytes elsewhere.
# Heavy imports happen inside the functions, so scripts' --help never pays for them.

BACKENDS = ("auto", "hf", "unsloth")
# Every linear projection of the common architectures; phi-2 names its MLP fc1/fc2 and its
# attention output `dense`.
KNOWN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                     "dense", "fc1", "fc2", "query_key_value", "dense_h_to_4h", "dense_4h_to_h")


def resolve_backend(backend: str) -> str:
    """`auto` → unsloth when CUDA is there and unsloth imports, else hf. Says which it picked."""
    if backend not in BACKENDS:
        raise KitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        import torch

        backend = "hf"
        if torch.cuda.is_available():
            try:
                import unsloth  # noqa: F401  (must be imported before transformers patches)
                backend = "unsloth"
            except Exception as err:  # unsloth missing or broken: the hf path still works
                print(f"backend: unsloth unavailable ({type(err).__name__}: {err}); using hf")
        print(f"backend: {backend}")
    return backend


def bnb_config(compute_dtype: str = "bfloat16", quant_type: str = "nf4", double_quant: bool = True):
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype))


def check_model_path(name: str) -> None:
    """A local-looking path that does not exist is an error before anything heavy starts."""
    path = Path(name)
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1
    if looks_local and not path.expanduser().exists():
        raise KitError(f"{name}: no such model directory")


def model_load_kwargs(name: str) -> dict:
    """from_pretrained kwargs every load shares: low CPU memory, the GPU when there is one (layers
    spill to CPU RAM), and eager attention for gemma-2 (its logit softcapping needs it)."""
    import torch
    from transformers import AutoConfig

    kwargs = {"low_cpu_mem_usage": True}
    if torch.cuda.is_available():
        kwargs["device_map"] = "auto"
    try:
        model_type = AutoConfig.from_pretrained(name).model_type
    except OSError as err:
        raise KitError(f"{name}: cannot load the model config ({err})") from None
    if model_type.startswith("gemma2"):
        kwargs["attn_implementation"] = "eager"
    return kwargs


def peak_memory() -> dict:
    """{"peak_gpu_memory_gb": ...} on a GPU, else {"peak_cpu_memory_gb": ...} (this process)."""
    import resource

    import torch

    if torch.cuda.is_available():
        return {"peak_gpu_memory_gb": round(torch.cuda.max_memory_allocated() / 2**30, 3)}
    # ru_maxrss is in KiB on Linux
    return {"peak_cpu_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}


def hub_token() -> str | None:
    """HF_TOKEN, else a cached `huggingface-cli login`; never printed."""
    token = os.environ.get("HF_TOKEN")
    if token:
        return token
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:
        return None


def push_folder(folder, repo: str, private: bool = False, retry_hint: str = "") -> None:
    """create_repo + upload_folder; a failure leaves the folder as it is and says how to retry."""
    from huggingface_hub import HfApi

    try:
        api = HfApi(token=hub_token())
        api.create_repo(repo, private=private, exist_ok=True)
        api.upload_folder(folder_path=str(folder), repo_id=repo, commit_message="Upload from llm2024-kit")
    except Exception as err:
        raise KitError(f"push to {repo} failed ({type(err).__name__}); {folder} is intact"
                       + (f": retry with `{retry_hint}`" if retry_hint else "")) from None
    print(f"pushed {folder} to https://huggingface.co/{repo}")


def ensure_chat_template(tokenizer) -> bool:
    """Give a tokenizer without a chat template the gemma-2 turn format; True if it was added."""
    if getattr(tokenizer, "chat_template", None):
        return False
    from prompts import GEMMA2_CHAT_TEMPLATE

    tokenizer.chat_template = GEMMA2_CHAT_TEMPLATE
    return True


def load_model(name: str, backend: str = "hf", load_in_4bit: bool = False, max_length: int = 2048,
               dtype: str | None = None, padding_side: str = "right"):
    """(model, tokenizer) for exactly the model named, on the resolved backend."""
    import torch

    check_model_path(name)
    if dtype is None:
        dtype = "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        # use_exact_model_name: unsloth would otherwise swap in its own pre-quantized repo
        # (unsloth/*-bnb-4bit) for a known base name, a rules risk in the competition.
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name, max_seq_length=max_length, dtype=getattr(torch, dtype),
            load_in_4bit=load_in_4bit, use_exact_model_name=True)
        resolved = getattr(model.config, "_name_or_path", name)
        if resolved.rstrip("/") != name.rstrip("/"):
            raise KitError(f"unsloth loaded {resolved!r} instead of {name!r}; refusing the swap")
        tokenizer.padding_side = padding_side
    else:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"dtype": getattr(torch, dtype), **model_load_kwargs(name)}
        try:
            tokenizer = AutoTokenizer.from_pretrained(name, padding_side=padding_side)
        except OSError as err:
            raise KitError(f"{name}: cannot load the tokenizer ({err})") from None
        if load_in_4bit:
            kwargs["quantization_config"] = bnb_config(compute_dtype="bfloat16" if dtype == "bfloat16"
                                                       else "float32")
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
        resolved = name
    print(f"model: {resolved} ({backend}, {'4-bit' if load_in_4bit else dtype})")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if ensure_chat_template(tokenizer):
        print("model: no chat template; using the gemma-2 turn format from prompts/")
    return model, tokenizer


def default_target_modules(model) -> list[str]:
    """Names of every linear projection in the decoder layers (q/k/v/o/gate/up/down...)."""
    import torch

    names = set()
    for full_name, module in model.named_modules():
        leaf = full_name.rsplit(".", 1)[-1]
        if leaf in KNOWN_PROJECTIONS and (isinstance(module, torch.nn.Linear)
                                          or type(module).__name__.startswith("Linear")):
            names.add(leaf)
    if not names:
        raise KitError("found no linear projections to adapt; pass --lora_target_modules")
    return sorted(names)


def add_lora(model, backend: str, r: int, alpha: int, dropout: float, target_modules, seed: int,
             gradient_checkpointing: bool, quantized: bool):
    target_modules = list(target_modules or default_target_modules(model))
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        return FastLanguageModel.get_peft_model(
            model, r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
            bias="none", use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
            random_state=seed)
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if quantized:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=gradient_checkpointing)
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=target_modules,
                        bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, config)


def package_versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("torch", "transformers", "trl", "peft", "bitsandbytes", "unsloth"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    return versions
