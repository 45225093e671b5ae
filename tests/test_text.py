"""kit.text: language shares that never raise, and the repetition measure."""
import pytest

from kit.text import cld2_details, non_japanese_share, repetition_share


def test_detection_survives_the_code_points_pycld2_rejects():
    text = "日本の首都は東京です。" * 3 + "\x00\x07\ufffe\ud800"
    assert cld2_details(text)[0][1] == "ja"


def test_non_japanese_share():
    assert non_japanese_share("日本の首都は東京です。東京は大きな都市です。") < 0.1
    assert non_japanese_share("The capital of Japan is Tokyo, a very large city.") == pytest.approx(1.0)
    assert non_japanese_share("") == 0.0


def test_repetition_share():
    assert repetition_share("短い") == 0.0
    assert repetition_share("春はあけぼの。やうやう白くなりゆく山ぎは、少しあかりて。") == 0.0
    assert repetition_share("繰り返し" * 30) > 0.9
