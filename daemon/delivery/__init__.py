"""The hot path: lane (claim) -> dispatch (checks, render) -> rate limit -> provider ->
completer (batched result writes); the reaper and the wake-up listener keep it moving.

Follow one message: :mod:`.lane` claims it, :mod:`.send_queue` gives it a sender,
:mod:`.dispatch` checks and renders it (:mod:`.render`) and calls the provider,
:mod:`.retry` decides what an error means, and :mod:`.completer` writes the outcome."""
