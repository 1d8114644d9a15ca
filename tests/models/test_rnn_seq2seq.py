"""The RNN encoder-decoder (models/rnn_seq2seq.py) against the lecture's attention equations
(hand-computed scores, a per-example composition of PyTorch's own layers) and the encoder-decoder
contract: cached = uncached decoding, padding changes nothing, a batch row = its unbatched output,
attention weights a distribution over the real source tokens; and it learns the copy task."""

from __future__ import annotations

import math

import pytest
import torch

from lmforge.generate import generate
from lmforge.generate.config import GenerationConfig
from lmforge.generate.seq2seq_step import EncoderDecoderStepModel, pad_sources
from lmforge.models.protocol import LanguageModel, LMOutput, NeuralLanguageModel
from lmforge.models.registry import PRESETS, build_model, model_class, preset_config
from lmforge.models.rnn_seq2seq import RNNSeq2Seq, RNNSeq2SeqConfig, SourceAttention, shift_right

VOCAB = 17
PAD, START, EOS = 0, 1, 2
VARIANTS = [
    {"cell": "gru", "bidirectional": True, "attention": "dot"},
    {"cell": "gru", "bidirectional": False, "attention": "additive"},
    {"cell": "lstm", "bidirectional": True, "attention": "additive"},
    {"cell": "lstm", "bidirectional": False, "attention": "dot"},
    {"cell": "gru", "bidirectional": True, "attention": "none"},
    {"cell": "lstm", "bidirectional": True, "attention": "none"},
]
NAMES = [f"{v['cell']}-{'bi' if v['bidirectional'] else 'uni'}-{v['attention']}" for v in VARIANTS]


def tiny(seed: int = 0, **overrides) -> RNNSeq2Seq:
    """Two layers, every weight random (biases too, so a dropped term shows)."""
    torch.manual_seed(seed)
    config = {"vocab_size": VOCAB, "n_embd": 6, "hidden_size": 8, "n_layer": 2, "block_size": 8}
    model = build_model("rnn_seq2seq", {**config, "decoder_start_token_id": START, **overrides}).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    return model


def random_ids(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randint(3, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


SOURCES = [[5, 6, 7, 8, 9, 10, 11], [12, 3], [4, 4, 13, 14, 5]]  # lengths 7, 2, 5


@pytest.fixture(params=VARIANTS, ids=NAMES)
def model(request) -> RNNSeq2Seq:
    return tiny(**request.param)


# --- the contract -------------------------------------------------------------------------------
def test_meets_the_protocol_as_a_seq2seq_model():
    model = tiny()
    assert isinstance(model, LanguageModel) and isinstance(model, NeuralLanguageModel)
    assert model_class("rnn_seq2seq") is RNNSeq2Seq and model.family == "rnn_seq2seq"
    assert (model.lm_kind, model.decoding) == ("seq2seq", "encoder_decoder")
    assert model.context_limit is None and model.target_limit is None and not model.carries_state
    out = model(*pad_sources(SOURCES, PAD), labels=random_ids((3, 4), 1))
    assert type(out) is LMOutput and out.logits.shape == (3, 4, VOCAB) and out.loss.shape == ()


@pytest.mark.parametrize(
    "preset,attention,description",
    [
        ("rnn-attn", "dot", "(GRU bidirectional encoder-decoder, dot attention, 1 layer x 128, 64-dim embeddings)"),
        ("rnn-attn-additive", "additive",
         "(GRU bidirectional encoder-decoder, additive attention, 1 layer x 128, 64-dim embeddings)"),
        ("rnn-seq2seq", "none", "(GRU bidirectional encoder-decoder, no attention, 1 layer x 128, 64-dim embeddings)"),
    ],
)  # fmt: skip
def test_presets_differ_only_in_the_attention(preset, attention, description):
    family, config = preset_config(preset)
    assert family == "rnn_seq2seq" and PRESETS[preset][1]["attention"] == attention
    with torch.device("meta"):
        model = build_model(family, {**config, "vocab_size": 67})
    assert model.describe() == description
    assert {k: v for k, v in config.items() if k != "attention"} == {
        k: v for k, v in PRESETS["rnn-attn"][1].items() if k != "attention"
    }


@pytest.mark.parametrize(
    "overrides,total",
    [
        # tables: one shared 7 x 2 = 14; encoder and decoder GRU: 3 gates x (3*2 + 3*3 + 3 + 3) = 63 each;
        # head 3*7 + 7 = 28
        ({"attention": "none", "bidirectional": False}, 14 + 63 + 63 + 28),
        # + W_c (6 -> 3, no bias) 18
        ({"attention": "dot", "bidirectional": False}, 14 + 63 + 63 + 18 + 28),
        # + W 3*3, U 3*3 + 3, v 3
        ({"attention": "additive", "bidirectional": False}, 14 + 63 + 63 + 18 + 24 + 28),
        # both directions 2 x 63, the projection 6*3, the bridge 6*3 + 3
        ({"attention": "dot", "bidirectional": True}, 14 + 126 + 18 + 21 + 63 + 18 + 28),
        # LSTM: 4 gates x 21 = 84 per direction; a bridge for h and one for c
        ({"attention": "dot", "bidirectional": True, "cell": "lstm"}, 14 + 168 + 18 + 42 + 84 + 18 + 28),
        # separate vocabularies: a source table of 5 x 2
        ({"attention": "none", "bidirectional": False, "shared_vocab": False, "source_vocab_size": 5},
         10 + 14 + 63 + 63 + 28),
    ],
)  # fmt: skip
def test_num_parameters_equals_a_hand_count(overrides, total):
    model = build_model("rnn_seq2seq", {"vocab_size": 7, "n_embd": 2, "hidden_size": 3, **overrides})
    assert model.num_parameters() == total
    tables = 14 + 21 + (10 if "source_vocab_size" in overrides else 0)
    assert model.num_parameters(exclude_embeddings=True) == total - tables


def test_tied_and_shared_tables_are_one_tensor_and_separate_ones_are_not():
    shared = build_model("rnn_seq2seq", {"vocab_size": 9, "n_embd": 4, "hidden_size": 4})
    assert shared.source_embedding.weight is shared.target_embedding.weight is shared.head.weight
    separate = build_model(
        "rnn_seq2seq", {"vocab_size": 9, "source_vocab_size": 5, "shared_vocab": False, "n_embd": 4}
    )
    assert separate.source_embedding.weight.shape == (5, 4) and separate.head.weight.shape == (9, 128)
    out = separate(torch.tensor([[4, 3]]), decoder_input_ids=torch.tensor([[8, 0, 1]]))
    assert out.logits.shape == (1, 3, 9)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"n_embd": 4, "hidden_size": 8, "tie_embeddings": True}, "n_embd == hidden_size"),
        ({"vocab_size": 9, "source_vocab_size": 5}, "shared vocabulary"),
        ({"attention": "general"}, "dot, additive or none"),
        ({"cell": "rnn"}, "gru or lstm"),
    ],
)
def test_bad_configs_are_refused(config, message):
    with pytest.raises(ValueError, match=message):
        RNNSeq2SeqConfig(**config)


def test_sources_padded_on_the_left_or_empty_are_refused():
    model = tiny()
    with pytest.raises(ValueError, match="padded on the right"):
        model(torch.tensor([[3, 4]]), torch.tensor([[0, 1]]), torch.tensor([[START]]))
    with pytest.raises(ValueError, match="at least one token"):
        model(torch.tensor([[3, 4]]), torch.tensor([[0, 0]]), torch.tensor([[START]]))


def test_labels_alone_are_shifted_right_into_the_decoder_inputs():
    model = tiny()
    labels = torch.tensor([[5, 6, EOS, -100], [7, EOS, -100, -100]])
    assert shift_right(labels, START).tolist() == [[START, 5, 6, EOS], [START, 7, EOS, 0]]
    source, mask = pad_sources(SOURCES[:2], PAD)
    explicit = model(source, mask, shift_right(labels, START), labels=labels)
    torch.testing.assert_close(model(source, mask, labels=labels).loss, explicit.loss, rtol=0, atol=0)


def test_the_training_objective_takes_the_contracts_batch():
    from lmforge.train.objectives import language_model_loss

    model = tiny()
    source, mask = pad_sources(SOURCES, PAD)
    labels = torch.tensor([[5, 6, EOS], [7, EOS, -100], [8, 9, EOS]])
    batch = {"input_ids": source, "attention_mask": mask, "decoder_input_ids": shift_right(labels, START),
             "labels": labels}  # fmt: skip
    total, count = language_model_loss(model, batch)
    assert count == 8
    torch.testing.assert_close(total / count, model(**batch).loss)


def test_the_model_flags_apply_to_the_rnn_presets_only():
    from lmforge.errors import UserInputError
    from lmforge.models.registry import check_settings

    check_settings(
        "rnn-attn", {"attention": "none", "cell": "lstm", "bidirectional": False, "hidden_size": 32}
    )
    with pytest.raises(UserInputError, match="--attention does not apply to --model gpt-nano"):
        check_settings("gpt-nano", {"attention": "dot"})
    assert preset_config("rnn-attn", attention="additive", cell="lstm")[1]["cell"] == "lstm"


# --- the four properties ------------------------------------------------------------------------
def test_cached_step_by_step_decoding_equals_one_forward(model):
    source, mask = pad_sources(SOURCES, PAD)
    target = torch.cat([torch.full((3, 1), START), random_ids((3, 9), 2)], dim=1)  # (3, 10)
    full = model(source, mask, target).logits
    state = model.start_decoding(model.encode(source, mask), mask, max_length=10)
    pieces = []
    for start, stop in [(0, 1), (1, 2), (2, 5), (5, 6), (6, 10)]:  # one token at a time, and several
        logits, state = model.decode(target[:, start:stop], state)
        pieces.append(logits)
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-5)


def test_padding_the_source_changes_no_output(model):
    source, mask = pad_sources(SOURCES, PAD)
    wider = torch.cat([source, random_ids((3, 4), 3)], dim=1)  # 4 more columns, any ids under mask 0
    wider_mask = torch.cat([mask, torch.zeros(3, 4, dtype=mask.dtype)], dim=1)
    target = torch.cat([torch.full((3, 1), START), random_ids((3, 5), 4)], dim=1)
    out = model(source, mask, target, output_attentions=True)
    padded = model(wider, wider_mask, target, output_attentions=True)
    torch.testing.assert_close(padded.logits, out.logits, rtol=0, atol=1e-6)
    if model.config.attention != "none":
        alpha, wide_alpha = out.cross_attentions[0], padded.cross_attentions[0]
        torch.testing.assert_close(wide_alpha[..., :7], alpha, rtol=0, atol=1e-6)
        assert bool((wide_alpha[..., 7:] == 0).all())


def test_each_row_of_a_batch_equals_its_unbatched_forward(model):
    source, mask = pad_sources(SOURCES, PAD)
    target = torch.cat([torch.full((3, 1), START), random_ids((3, 6), 5)], dim=1)
    batched = model(source, mask, target).logits
    for row, alone in enumerate(SOURCES):
        single = model(torch.tensor([alone]), None, target[row : row + 1]).logits
        torch.testing.assert_close(batched[row : row + 1], single, rtol=0, atol=1e-5)


@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_each_row_of_a_batch_generates_what_it_generates_alone(model, strategy):
    config = GenerationConfig(strategy=strategy, num_beams=3, max_new_tokens=6, eos_id=EOS)

    def run(sources):
        step_model = EncoderDecoderStepModel(model, *pad_sources(sources, PAD))
        return [r[0].ids for r in generate(step_model, [[START]] * len(sources), config)]

    batched = run(SOURCES)
    assert batched == [run([source])[0] for source in SOURCES]
    assert all(len(ids) > 0 for ids in batched)


def test_greedy_generation_is_the_argmax_of_its_own_teacher_forced_logits(model):
    source, mask = pad_sources(SOURCES, PAD)
    config = GenerationConfig(strategy="greedy", max_new_tokens=5)
    results = generate(EncoderDecoderStepModel(model, source, mask), [[START]] * 3, config)
    generated = torch.tensor([r[0].ids for r in results])  # (3, 5), no end token given
    logits = model(source, mask, torch.cat([torch.full((3, 1), START), generated[:, :-1]], dim=1)).logits
    assert torch.equal(logits.argmax(-1), generated)


def test_reorder_decoding_moves_rows_with_their_source(model):
    source, mask = pad_sources(SOURCES, PAD)
    state = model.start_decoding(model.encode(source, mask), mask, max_length=3)
    _, state = model.decode(torch.full((3, 1), START), state)
    index = torch.tensor([2, 2, 0, 1])
    moved = model.reorder_decoding(state, index)
    next_ids = torch.tensor([[5], [6], [7], [8]])
    logits, _ = model.decode(next_ids, moved)
    for row, old in enumerate(index.tolist()):
        alone = model.reorder_decoding(state, torch.tensor([old]))
        expected, _ = model.decode(next_ids[row : row + 1], alone)
        torch.testing.assert_close(logits[row : row + 1], expected, rtol=0, atol=1e-6)


def test_attention_weights_sum_to_one_over_the_real_source_tokens(model):
    source, mask = pad_sources(SOURCES, PAD)
    out = model(source, mask, random_ids((3, 4), 6), output_attentions=True)
    if model.config.attention == "none":
        assert out.cross_attentions is None  # the bottleneck model has no alignment to show
        return
    (alpha,) = out.cross_attentions
    assert alpha.shape == (3, 1, 4, 7)  # (B, one head, T, S)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3, 1, 4), rtol=0, atol=1e-6)
    assert bool((alpha.masked_select(~mask.bool()[:, None, None, :].expand_as(alpha)) == 0).all())
    assert bool((alpha.masked_select(mask.bool()[:, None, None, :].expand_as(alpha)) > 0).all())


# --- the equations --------------------------------------------------------------------------------
def test_dot_scores_equal_the_lecture_formula_by_hand():
    attention = SourceAttention("dot", 2)
    s = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # s_1, s_2
    h = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [9.0, 9.0]]])  # h_1, h_2, then a padded position
    mask = torch.tensor([[True, True, False]])
    a, alpha = attention(s, attention.keys(h), h, mask)
    # s_1: e = [1, 3]; s_2: e = [2, -1]
    for t, (e1, e2) in enumerate([(1.0, 3.0), (2.0, -1.0)]):
        w1 = math.exp(e1) / (math.exp(e1) + math.exp(e2))
        assert alpha[0, t].tolist() == pytest.approx([w1, 1 - w1, 0.0], abs=1e-7)
        expected = [w1 * 1.0 + (1 - w1) * 3.0, w1 * 2.0 + (1 - w1) * -1.0]  # a_t = sum_i alpha_i h_i
        assert a[0, t].tolist() == pytest.approx(expected, abs=1e-6)


def test_additive_scores_equal_bahdanaus_formula_by_hand():
    attention = SourceAttention("additive", 2)
    with torch.no_grad():
        attention.query.weight.copy_(torch.eye(2))  # W = I
        attention.key.weight.copy_(2 * torch.eye(2))  # U = 2I
        attention.key.bias.copy_(torch.tensor([0.1, 0.0]))  # b
        attention.score.weight.copy_(torch.tensor([[1.0, -1.0]]))  # v
    s = torch.tensor([[[0.5, 0.0]]])
    h = torch.tensor([[[0.1, 0.2], [-0.3, 0.4]]])
    a, alpha = attention(s, attention.keys(h), h, torch.tensor([[True, True]]))
    e = [
        math.tanh(0.5 + 2 * 0.1 + 0.1) - math.tanh(0.0 + 2 * 0.2),  # v . tanh(W s + U h_1 + b)
        math.tanh(0.5 - 2 * 0.3 + 0.1) - math.tanh(0.0 + 2 * 0.4),
    ]
    w1 = math.exp(e[0]) / (math.exp(e[0]) + math.exp(e[1]))
    assert alpha[0, 0].tolist() == pytest.approx([w1, 1 - w1], abs=1e-6)
    assert a[0, 0].tolist() == pytest.approx([w1 * 0.1 - (1 - w1) * 0.3, w1 * 0.2 + (1 - w1) * 0.4], abs=1e-6)


def reference_logits(model: RNNSeq2Seq, source: list[int], target: torch.Tensor) -> torch.Tensor:
    """One example, composed by hand from the model's PyTorch layers: the encoder on the unpadded
    source (no packing), the bridge, the decoder, then the attention's sums written out."""
    config, L = model.config, model.config.n_layer
    outputs, final = model.encoder(model.source_embedding(torch.tensor([source])))
    final = final if isinstance(final, tuple) else (final,)
    if config.bidirectional:
        h = outputs[0] @ model.project.weight.T  # (S, H)
        start = []
        for k, (state, bridge) in enumerate(zip(final, model.bridge)):
            joined = torch.stack(
                [torch.cat([state[2 * layer, 0], state[2 * layer + 1, 0]]) for layer in range(L)]
            )
            mapped = joined @ bridge.weight.T + bridge.bias
            start.append(torch.tanh(mapped)[:, None] if k == 0 else mapped[:, None])  # (L, 1, H)
        final = tuple(start)
    else:
        h = outputs[0]
    s, _ = model.decoder(model.target_embedding(target[None]), final if len(final) > 1 else final[0])
    rows = []
    for s_t in s[0]:
        if config.attention == "none":
            rows.append(s_t)
            continue
        if config.attention == "dot":
            e = torch.stack([s_t @ h_i for h_i in h])
        else:
            att = model.attention
            e = torch.stack(
                [
                    att.score.weight[0]
                    @ torch.tanh(att.query.weight @ s_t + att.key.weight @ h_i + att.key.bias)
                    for h_i in h
                ]
            )
        alpha = torch.exp(e) / torch.exp(e).sum()
        a_t = sum(alpha[i] * h[i] for i in range(len(source)))
        rows.append(torch.tanh(model.combine.weight @ torch.cat([a_t, s_t])))
    return torch.stack(rows) @ model.head.weight.T + model.head.bias


def test_forward_equals_a_per_example_composition_of_torch_layers(model):
    model = model.double()
    source, mask = pad_sources(SOURCES, PAD)
    target = torch.cat([torch.full((3, 1), START), random_ids((3, 5), 7)], dim=1)
    logits = model(source, mask, target).logits
    for row, alone in enumerate(SOURCES):
        with torch.no_grad():
            expected = reference_logits(model, alone, target[row])
        torch.testing.assert_close(logits[row].detach(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_encoder_states_have_the_decoder_width_either_way(bidirectional, cell):
    model = tiny(cell=cell, bidirectional=bidirectional)
    assert model.encoder.bidirectional is bidirectional
    source, mask = pad_sources(SOURCES, PAD)
    memory = model.encode(source, mask)
    assert memory.states.shape == (3, 7, 8)  # (B, S, H), projected when both directions are read
    assert len(memory.final) == (2 if cell == "lstm" else 1)
    assert all(f.shape == (2, 3, 8) for f in memory.final)  # (n_layer, B, H)
    assert bool((memory.states[1, 2:] == 0).all())  # padding leaves zeros, no bias added


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_trains_under_bf16_autocast_on_the_cpu(cell, cpu_capability):
    model = tiny(cell=cell).train()
    source, mask = pad_sources(SOURCES, PAD)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(source, mask, labels=random_ids((3, 4), 8)).loss
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_weights_survive_a_run_directory_round_trip(tmp_path):
    from lmforge.run import Run

    model = tiny(n_embd=8)  # n_embd == hidden_size: source, target and head are one tensor
    Run(tmp_path).save_weights(model)
    fresh = tiny(seed=1, n_embd=8)
    Run(tmp_path).load_weights(fresh)
    source, mask = pad_sources(SOURCES, PAD)
    target = random_ids((3, 4), 9)
    torch.testing.assert_close(fresh(source, mask, target).logits, model(source, mask, target).logits)
    assert fresh.head.weight is fresh.source_embedding.weight


# --- learning -------------------------------------------------------------------------------------
def copy_batch(generator: torch.Generator, size: int, shortest: int, longest: int):
    """Random sources of 13 symbols (ids 3..15), right-padded, and their copies as targets."""
    lengths = torch.randint(shortest, longest + 1, (size,), generator=generator)
    mask = (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()
    source = torch.randint(3, 16, mask.shape, generator=generator) * mask
    decoder_input = torch.zeros(size, mask.shape[1] + 1, dtype=torch.long)
    labels = torch.full_like(decoder_input, -100)
    decoder_input[:, 0] = START
    for row, length in enumerate(lengths.tolist()):
        decoder_input[row, 1 : length + 1] = labels[row, :length] = source[row, :length]
        labels[row, length] = EOS
    return source, mask, decoder_input, labels


def train_on_copies(attention: str, steps: int, shortest: int, longest: int) -> RNNSeq2Seq:
    """The rnn-attn preset at half width, AdamW with a linear decay (a constant rate spikes late)."""
    torch.manual_seed(0)
    family, config = preset_config("rnn-attn", attention=attention, hidden_size=64, n_embd=32)
    model = build_model(family, {**config, "vocab_size": 16, "decoder_start_token_id": START})
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        source, mask, decoder_input, labels = copy_batch(generator, 64, shortest, longest)
        loss = model(source, mask, decoder_input, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    return model.eval()


@pytest.mark.slow  # 14 s; the CLI test trains rnn-attn on the copy task in the default run
def test_learns_the_copy_task_to_99_percent_exact_match_greedy():
    model = train_on_copies("dot", steps=400, shortest=3, longest=8)
    source, mask, _, _ = copy_batch(torch.Generator().manual_seed(1234), 200, 3, 8)  # held out
    sources = [row[: int(n)].tolist() for row, n in zip(source, mask.sum(1))]
    config = GenerationConfig(strategy="greedy", max_new_tokens=10, eos_id=EOS)
    with torch.no_grad():
        results = generate(
            EncoderDecoderStepModel(model, *pad_sources(sources, PAD)), [[START]] * 200, config
        )
    exact = sum(result[0].ids == wanted for result, wanted in zip(results, sources)) / len(sources)
    assert exact >= 0.99


@pytest.mark.slow
def test_without_attention_the_same_budget_copies_longer_sources_far_worse():
    """The lecture's bottleneck: 8-12 symbols through one 64-wide vector, against attention."""
    held_out = copy_batch(torch.Generator().manual_seed(1234), 200, 8, 12)
    losses = {}
    for attention in ("dot", "none"):
        model = train_on_copies(attention, steps=400, shortest=8, longest=12)
        with torch.no_grad():
            losses[attention] = model(*held_out[:3], labels=held_out[3]).loss.item()
    assert losses["none"] > 1.5 and losses["dot"] < 0.5 * losses["none"], losses
