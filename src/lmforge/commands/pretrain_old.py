def describe_model(family: str, config) -> str:
    """The shape of a model in a few words, for the summary line."""
    if family == "gpt":
        return f"{config.n_layer} layers x {config.n_embd} wide, context {config.block_size}"
    if family == "window":
        direct = " + direct connections" if config.direct else ""
        return (
            f"(the previous {config.context} tokens x {config.n_embd}-dim embeddings -> "
            f"{config.hidden_size} tanh units{direct}; trained on windows of {config.block_size})"
        )
    kind = f"Elman RNN, {config.activation}" if family == "rnn" else family.upper()  # LSTM, GRU
    layers = f"{config.n_layer} layer{'s' if config.n_layer > 1 else ''}"
    tied = ", tied" if config.tie_embeddings else ""
    return (
        f"({kind}, {layers} x {config.hidden_size}, {config.n_embd}-dim embeddings{tied}; "
        f"truncated BPTT over windows of {config.block_size})"
    )
