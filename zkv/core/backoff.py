"""How long to wait before sending an unanswered request again."""


def backoff(retry_interval: float, resends: int) -> float:
    """Delays double with each resend (up to 16x), so a busy peer, or a busy
    cluster, is not buried under resends of what it is still working on."""
    return retry_interval * (1 << min(resends, 4))
