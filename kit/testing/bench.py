"""What every benchmark script shares: its argument parser with --update_committed, and one
torch thread (two on two cores are erratic)."""
import argparse


def bench_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--update_committed", action="store_true",
                        help="write bench/results/ (the README's figures) instead of results/bench/")
    return parser


def one_thread() -> None:
    import torch

    torch.set_num_threads(1)
