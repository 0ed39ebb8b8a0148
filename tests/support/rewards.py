"""Programmatic rewards for PPO tests (importable as `support.rewards:<name>` with tests/ on the path)."""

TARGET = "marker"


def marker_fraction(prompts, responses):
    """Share of the response's words that are the target word (0 for an empty response)."""
    out = []
    for text in responses:
        words = text.split()
        out.append(sum(w == TARGET for w in words) / len(words) if words else 0.0)
    return out


CALLS = 0


def nan_from_third_call(prompts, responses):
    global CALLS
    CALLS += 1
    return marker_fraction(prompts, responses) if CALLS < 3 else [float("nan")] * len(responses)
