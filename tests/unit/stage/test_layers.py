import pytest

from services.stage.layers import LayerRangeError, even_split, local_partition, parse_layers


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0:15", (0, 15)), ("15:30", (15, 30)), ("4:", (4, 30)), (":6", (0, 6))],
)
def test_parse_layers(text: str, expected: tuple[int, int]) -> None:
    assert parse_layers(text, 30) == expected


@pytest.mark.parametrize("text", ["15", "a:b", "10:5", "0:31", "-1:4", "3:3"])
def test_parse_layers_rejects_bad_ranges(text: str) -> None:
    with pytest.raises(LayerRangeError, match="--layers"):
        parse_layers(text, 30)


@pytest.mark.parametrize(
    ("start", "end", "rank", "size", "partition"),
    [
        (0, 30, 0, 1, (30,)),
        (0, 15, 0, 2, (15, 15)),
        (15, 30, 1, 2, (15, 15)),
        (4, 24, 1, 3, (4, 20, 6)),
        (24, 30, 1, 2, (24, 6)),
    ],
)
def test_local_partition_places_the_range(
    start: int, end: int, rank: int, size: int, partition: tuple[int, ...]
) -> None:
    part = local_partition(start, end, 30)
    assert (part.rank, part.size, part.partition) == (rank, size, partition)
    assert sum(part.partition[: part.rank]) == start
    assert part.env_value == ",".join(map(str, partition))


def test_even_split_covers_all_layers() -> None:
    assert even_split(30, 2) == [(0, 15), (15, 30)]
    assert even_split(30, 4) == [(0, 8), (8, 16), (16, 23), (23, 30)]
    with pytest.raises(LayerRangeError):
        even_split(3, 4)


def test_balanced_split_gives_the_head_stage_fewer_layers() -> None:
    from services.stage.layers import balanced_split

    assert balanced_split(30, 2, head_cost=8.0) == [(0, 19), (19, 30)]
    assert balanced_split(30, 2, head_cost=0.0) == [(0, 15), (15, 30)]
    three = balanced_split(30, 3, head_cost=6.0)
    assert three[0][0] == 0 and three[-1][1] == 30
    assert [b - a for a, b in three] == [12, 12, 6]


def test_head_cost_of_smollm2() -> None:
    from services.stage.layers import head_cost_in_layers

    config = {
        "hidden_size": 576,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
    }
    # 8 layers' multiply-adds per sampled token; half the tokens are sampled at 128/128.
    assert 7.5 < head_cost_in_layers(config, sampled_share=1.0) < 8.5
    assert 3.75 < head_cost_in_layers(config) < 4.25
