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


def liking_marker(prompts, responses):
    """The loop tests' taste: the word "marker" is good, length a little bad."""
    return [sum(w == "marker" for w in r.split()) - 0.1 * len(r.split()) for r in responses]


def slow_liking_marker(prompts, responses):
    """`liking_marker`, a quarter of a second per call: a simulated assessor slow enough to be killed mid-vote."""
    import time  # lazy: only the kill test needs the delay

    time.sleep(0.25)
    return liking_marker(prompts, responses)
