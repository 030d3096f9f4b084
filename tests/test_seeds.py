import re

import pytest
import torch

from nbbatch.core.seeds import MAX_IMAGES, generator_state, make_generator, parse_seeds, random_seeds


@pytest.mark.parametrize(
    ("text", "seeds"),
    [
        ("0-7", (0, 1, 2, 3, 4, 5, 6, 7)),
        ("3,17,42", (3, 17, 42)),
        ("0-3,10", (0, 1, 2, 3, 10)),
        (" 5 ", (5,)),
        ("4-4", (4,)),
        ("18446744073709551615", (2**64 - 1,)),
    ],
)
def test_parses_ranges_lists_and_mixtures(text, seeds):
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("7-0", "seed range '7-0' goes down: write it as 0-7"),
        ("abc", "bad seed 'abc'"),
        ("-3", "bad seed '-3'"),
        ("1,,2", "empty entry"),
        ("", "no seeds given"),
        ("1.5", "bad seed '1.5'"),
        ("0-3,2", "seed 2 is given twice"),
        ("18446744073709551616", "is larger than"),
        ("0-99999999", f"more than {MAX_IMAGES} seeds"),
        ("٣", "bad seed"),
    ],
)
def test_refuses_bad_seed_lists_naming_the_bad_part(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_seeds(text)


def test_random_seeds_are_distinct_32_bit_numbers():
    seeds = random_seeds(50)
    assert len(set(seeds)) == 50
    assert all(0 <= seed < 2**32 for seed in seeds)


@pytest.mark.parametrize("count", [0, -1, MAX_IMAGES + 1, True, 2.0])
def test_random_seed_count_must_be_sensible(count):
    with pytest.raises(ValueError, match="number of random seeds"):
        random_seeds(count)


def test_saved_state_restores_the_exact_random_stream():
    generator = make_generator("cpu", 1234)
    state = generator_state(generator)
    first = torch.randn(16, generator=generator)
    restored = make_generator("cpu", 0, state)
    assert torch.equal(torch.randn(16, generator=restored), first)
    assert len(state) == 5056


def test_state_of_a_seeded_generator_equals_a_fresh_seeding():
    assert torch.equal(
        torch.randn(8, generator=make_generator("cpu", 7)), torch.randn(8, generator=torch.Generator().manual_seed(7))
    )


def test_generator_on_a_missing_cuda_device_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ValueError, match="cannot make a random generator on 'cuda'"):
        make_generator("cuda", 0)


def test_a_state_of_the_wrong_size_is_a_clear_error():
    with pytest.raises(ValueError, match="saved generator state does not fit a cpu generator"):
        make_generator("cpu", 0, b"\x00" * 16)
