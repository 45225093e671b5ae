"""LoRA training and batched generation throughput for Gemma-2 shapes with random weights (nothing
to download), on whatever device is present, with a projection of 100 elyza tasks vs. the L4 budget.

    python bench/bench_gpu.py                          # GPU: 2b, 9b, 27b shapes; CPU: tiny shapes
    python bench/bench_gpu.py --sizes 9b --batches 1,8

A model too large to build whole (27B) is built with 1 and 2 decoder layers at full width; the
per-layer cost is their difference, and the full model's figure is the 1-layer figure plus
(layers - 1) x that cost (the method is printed and saved). Generation suppresses EOS, so the
projection is an upper bound. Results: results/bench/gpu-<device>.json (bench/results/ with
--update_committed).
"""
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kit.runs import bench_result  # noqa: E402
from kit.testing.bench import bench_parser  # noqa: E402

# hidden, intermediate, layers, heads, kv heads, head_dim (Gemma-2 configs on the Hub); vocab 256000
SHAPES = {"2b": (2304, 9216, 26, 8, 4, 256), "9b": (3584, 14336, 42, 16, 8, 256),
          "27b": (4608, 36864, 46, 32, 16, 128), "tiny": (64, 128, 4, 4, 2, 16)}
BANDWIDTH_GBS = {"H100": 3350, "H200": 4800, "A100": 2039, "L4": 300, "A10G": 600, "T4": 320}
L4_BUDGET_S = 3600


def build(size: str, layers: int, device, dtype):
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    hidden, inter, _, heads, kv, head_dim = SHAPES[size]
    config = Gemma2Config(vocab_size=256000 if size != "tiny" else 1200, hidden_size=hidden,
                          intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
                          num_key_value_heads=kv, head_dim=head_dim, attn_implementation="eager")
    torch.manual_seed(0)
    with torch.device(device):
        model = Gemma2ForCausalLM(config).to(dtype)
    return model


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def save_random(size: str, layers: int, folder: Path) -> Path:
    """The random model and a tokenizer saved as a checkpoint, so every backend loads it the way
    it loads a real one (bnb quantizes on load, unsloth patches on load)."""
    import torch

    from kit.tiny import build_tokenizer, corpus_texts

    model = build(size, layers, "cpu", torch.bfloat16)
    model.save_pretrained(folder)
    build_tokenizer(corpus_texts()).save_pretrained(folder)
    return folder


def train_rate(model, seq: int, steps: int, device) -> float:
    """tokens/s over `steps` optimizer steps of batch 1 of a model that already has LoRA."""
    import torch

    model.train()  # before any forward: a 4-bit model run in eval mode first would not train
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(10, model.config.vocab_size, (1, seq), device=device)
    for step in range(steps + 1):  # the first step warms up and is not timed
        if step == 1:
            synchronize(device)
            start = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    synchronize(device)
    return seq * steps / (time.perf_counter() - start)


def load_hf_bnb(folder: Path, device):
    """The kit's own QLoRA path: nf4 + double quant, prepare_model_for_kbit_training, LoRA r 16."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    from kit.models import bnb_config

    compute = "bfloat16" if device == "cuda" else "float32"
    model = AutoModelForCausalLM.from_pretrained(
        folder, quantization_config=bnb_config(compute), dtype=getattr(torch, compute),
        attn_implementation="eager", device_map={"": 0} if device == "cuda" else None)
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    return get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=LORA_TARGETS,
                                            task_type="CAUSAL_LM"))


def load_unsloth(folder: Path, seq: int):
    import torch
    from unsloth import FastLanguageModel

    model, _ = FastLanguageModel.from_pretrained(model_name=str(folder), max_seq_length=seq,
                                                 dtype=torch.bfloat16, load_in_4bit=True,
                                                 use_exact_model_name=True)
    return FastLanguageModel.get_peft_model(model, r=16, lora_alpha=16, target_modules=LORA_TARGETS,
                                            use_gradient_checkpointing="unsloth")


def generate_rate(model, batch: int, prompt: int, new: int, device) -> float:
    """New tokens/s of greedy generation with EOS suppressed (every row runs to `new`)."""
    import torch

    model.eval()
    ids = torch.randint(10, model.config.vocab_size, (batch, prompt), device=device)
    settings = dict(max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids[:, :8], max_new_tokens=2, min_new_tokens=2, do_sample=False, pad_token_id=0)
        synchronize(device)
        start = time.perf_counter()
        model.generate(ids, **settings)
        synchronize(device)
    return batch * new / (time.perf_counter() - start)


def synchronize(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def peak_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if device == "cuda" else None


def measure(size, layers, args, device, dtype) -> dict:
    """Training (hf + bnb 4-bit QLoRA; unsloth where it imports) and generation (the 4-bit model at
    each batch size) for one layer count."""
    import tempfile

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = save_random(size, layers, Path(tmp))
        backends = {"hf_bnb": lambda: load_hf_bnb(folder, device)}
        if device == "cuda" and importlib.util.find_spec("unsloth") is not None:
            backends["unsloth"] = lambda: load_unsloth(folder, args.seq)
        for name, load in backends.items():
            reset_peak(device)
            try:
                model = load()
                result[f"{name}_train_tokens_per_s"] = train_rate(model, args.seq, args.steps, device)
                result[f"{name}_train_peak_gb"] = peak_gb(device)
            except Exception as err:  # a backend that cannot run here is reported, not fatal
                result[f"{name}_error"] = f"{type(err).__name__}: {str(err)[:200]}"
            model = None
            free(device)
        model = load_hf_bnb(folder, device).base_model.model  # a fresh 4-bit load, no LoRA
        for batch in args.batches:
            reset_peak(device)
            result[f"generate_b{batch}_tokens_per_s"] = generate_rate(model, batch, args.prompt, args.new, device)
            result[f"generate_b{batch}_peak_gb"] = peak_gb(device)
        model = None
        free(device)
    return result


def reset_peak(device):
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def free(device):
    import gc

    import torch

    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def scaled(one: dict, two: dict, layers: int) -> dict:
    """Time per token is additive over layers: t(L) = t(1) + (L - 1) (t(2) - t(1))."""
    out = {}
    for key, value in one.items():
        if isinstance(value, str) or key not in two:
            out[key] = value
        elif key.endswith("tokens_per_s"):
            t1, t2 = 1 / value, 1 / two[key]
            out[key] = 1 / (t1 + (layers - 1) * max(t2 - t1, 0))
        elif value is not None:
            out[key] = round(value + (layers - 1) * max(two[key] - value, 0), 2)
        else:
            out[key] = None
    return out


def main(argv=None):
    import torch

    p = bench_parser(__doc__.split("\n")[0])
    p.add_argument("--sizes", help="default: 2b,9b,27b on a GPU, tiny on a CPU")
    p.add_argument("--batches", default="1,8,16")
    p.add_argument("--seq", type=int, default=1024, help="training sequence length")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--prompt", type=int, default=3000, help="prompt tokens (20-shot prompts are ~3k)")
    p.add_argument("--new", type=int, default=64, help="new tokens measured per generation")
    p.add_argument("--build_whole_below_gb", type=float, default=30, help="else layer-reduce")
    p.add_argument("--out", help="default: results/bench/ (bench/results/ with --update_committed)")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
        args.seq, args.prompt, args.new = min(args.seq, 64), min(args.prompt, 64), min(args.new, 8)
    sizes = (args.sizes or ("2b,9b,27b" if device == "cuda" else "tiny")).split(",")
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    bandwidth = next((v for k, v in BANDWIDTH_GBS.items() if k in name), None)
    report = {"device": name, "torch": torch.__version__, "dtype": str(dtype), "date": time.strftime("%Y-%m-%d"),
              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "sizes": {}}
    import transformers

    report["transformers"] = transformers.__version__
    for size in sizes:
        hidden, inter, layers, *_ = SHAPES[size]
        weights_gb = 2 * (256000 * hidden + layers * (4 * hidden * hidden + 3 * hidden * inter)) / 2**30
        if size != "tiny" and weights_gb > args.build_whole_below_gb:
            one, two = measure(size, 1, args, device, dtype), measure(size, 2, args, device, dtype)
            result = scaled(one, two, layers)
            result["method"] = f"built with 1 and 2 layers at full width, scaled to {layers} layers"
        else:
            result = measure(size, layers, args, device, dtype)
            result["method"] = f"whole model, {layers} layers"
        batch = max(args.batches)
        per_token_s = 1 / result[f"generate_b{batch}_tokens_per_s"]  # batch tokens/s → s per token
        projected = math.ceil(100 / batch) * batch * 1024 * per_token_s
        result["projected_100_tasks_s_here"] = round(projected, 1)
        if bandwidth:
            result["projected_100_tasks_s_on_L4"] = round(projected * bandwidth / BANDWIDTH_GBS["L4"], 1)
            result["within_L4_budget"] = result["projected_100_tasks_s_on_L4"] <= L4_BUDGET_S
        result = {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()}
        report["sizes"][size] = result
        print(f"{size}: {json.dumps(result)}")
    report["projection"] = ("100 tasks x 1024 new tokens (EOS suppressed: an upper bound) at the largest "
                            "batch's measured rate and prompt length; the L4 figure scales by memory "
                            "bandwidth (decode is bandwidth-bound): an estimate, not a measurement")
    file_name = f"gpu-{name.replace(' ', '_')}.json"
    out = Path(args.out) / file_name if args.out else bench_result(file_name, args.update_committed)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"→ {out}")
    return report


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
