"""Model loading: unsloth on a CUDA GPU, transformers + peft + bitsandbytes elsewhere; LoRA, the
4-bit config, the chat template, Hub token and push, package versions and peak memory.

Heavy libraries are imported inside the functions that need them, so every script's `--help`
stays instant and the CPU path never touches GPU-only packages.
"""
from __future__ import annotations

import os
from pathlib import Path

from kit.io import KitError

BACKENDS = ("auto", "hf", "unsloth")
# Every linear projection of the common architectures; phi-2 names its MLP fc1/fc2 and its
# attention output `dense`.
KNOWN_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
                     "dense", "fc1", "fc2", "query_key_value", "dense_h_to_4h", "dense_4h_to_h")


def resolve_backend(backend: str) -> str:
    """`auto` → unsloth when CUDA is there and unsloth imports, else hf. Says which it picked.
    unsloth is imported here, before anything imports trl, transformers or peft: it patches them
    as it is imported (the trainer class bound before would stay trl's plain one)."""
    if backend not in BACKENDS:
        raise KitError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "unsloth":
        require("unsloth")
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


def require(package: str) -> None:
    """Import a GPU-only package, or stop with one line saying how to get it."""
    try:
        __import__(package)
    except Exception as err:  # missing, or present and refusing (unsloth without a GPU)
        raise KitError(f"{package} does not import here ({type(err).__name__}: {str(err)[:160]}); it needs "
                       "a CUDA GPU and `make install-gpu` (python -m kit.doctor checks the machine)") from None


def distributed_launch() -> str | None:
    """"fsdp", "ddp" (any other multi-process launch) or None for a single process."""
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() == "true":
        return "fsdp"
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else None


def bnb_config(compute_dtype: str = "bfloat16", quant_type: str = "nf4", double_quant: bool = True):
    import torch
    from transformers import BitsAndBytesConfig

    # FSDP shards parameters of one dtype: 4-bit weights are stored in the compute dtype there
    storage = {"bnb_4bit_quant_storage": getattr(torch, compute_dtype)} if distributed_launch() == "fsdp" else {}
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype), **storage)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_model_path(name: str, flag: str = "--model") -> None:
    """Before anything heavy starts: a local-looking path that does not exist, a LoRA adapter or a
    training run given as a model, or a model folder without tokenizer files, is an error."""
    path = Path(name)
    looks_local = name.startswith((".", "/", "~")) or path.exists() or name.count("/") > 1
    if looks_local and not path.expanduser().exists():
        raise KitError(f"{flag} {name}: no such model directory")
    folder = path.expanduser()
    if (folder / "adapter_config.json").is_file():
        raise KitError(f"{flag} {name} is a LoRA adapter, not a model: pass it as --adapter, with its "
                       "base model as --model")
    if (folder / "adapter" / "adapter_config.json").is_file():
        raise KitError(f"{flag} {name} is a training run folder: pass --adapter {folder / 'adapter'}, "
                       "with its base model as --model")
    if folder.is_dir() and (folder / "config.json").exists() and not any(
            (folder / f).exists() for f in TOKENIZER_FILES):
        # transformers would build a 5-token placeholder tokenizer and carry on
        raise KitError(f"{name}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); copy them from "
                       "the base model's folder")


def check_adapter_path(adapter: str) -> dict:
    """The adapter's config (a JSON object in adapter_config.json beside its weights), or a
    one-line error naming what is wrong, before any model loads."""
    import json

    folder = Path(adapter).expanduser()
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise KitError(f"{adapter}: no adapter_config.json (not a LoRA adapter folder)")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise KitError(f"{config_file}: not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise KitError(f"{config_file}: not a JSON object")
    if not any((folder / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")):
        raise KitError(f"{adapter}: no adapter weights (adapter_model.safetensors)")
    return config


def model_load_kwargs(name: str) -> dict:
    """from_pretrained kwargs every load shares: low CPU memory, the GPU when there is one (layers
    spill to CPU RAM), and eager attention for gemma-2 (its logit softcapping needs it)."""
    import torch
    from transformers import AutoConfig

    kwargs = {"low_cpu_mem_usage": True}
    launch = distributed_launch()
    if torch.cuda.is_available() and launch != "fsdp":  # FSDP places the shards itself
        # one process: spread over the GPUs (layers spill to CPU RAM); DDP: each rank holds a
        # whole copy on its own GPU
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", 0))} if launch == "ddp" else "auto"
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


def load_for_generation(name: str, adapter: str | None = None, backend: str = "hf",
                        load_in_4bit: bool = False):
    """(model, tokenizer) in eval mode with left padding, the LoRA adapter applied if given."""
    model, tokenizer = load_model(name, backend, load_in_4bit, padding_side="left")
    if adapter:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, adapter)
        except RuntimeError as err:
            if "size mismatch" not in str(err):
                raise
            base = check_adapter_path(adapter).get("base_model_name_or_path")
            raise KitError(f"{adapter} does not fit {name}: it was trained on {base!r}, whose layer "
                           "sizes differ") from None
    if backend == "unsloth":
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(model)
    model.eval()
    return model, tokenizer
