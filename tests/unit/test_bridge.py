"""ReactorBridge: a coroutine on another thread's event loop awaits work done on the
reactor; every hop has a deadline, and awaiting one on the reactor thread is refused.

The reactor is trial's real one; the event loop runs in a thread of the test's own
(jobsched.net.loop.EventLoopThread), stopped in cleanup.
"""

from __future__ import annotations

import asyncio

from twisted.internet import defer, reactor
from twisted.trial import unittest

from jobsched import errors
from jobsched.net.bridge import ReactorBridge
from jobsched.net.loop import EventLoopThread
from tests.unit.test_cluster_api import wait_until


def on_loop(loop: EventLoopThread, coroutine) -> defer.Deferred:
    """Run `coroutine` on `loop`; a Deferred (fired on the reactor) of its outcome."""
    result = defer.Deferred()

    def settle(future) -> None:
        error = future.exception()
        if error is None:
            result.callback(future.result())
        else:
            result.errback(error)

    loop.submit(coroutine).add_done_callback(lambda f: reactor.callFromThread(settle, f))
    return result


class Recorder:
    """A Deferred that never fires by itself and notes whether it was cancelled."""

    def __init__(self) -> None:
        self.cancelled = False
        self.deferred = defer.Deferred(self._cancel)
        self.ran_on_reactor_thread = None

    def _cancel(self, _d) -> None:
        self.cancelled = True

    def start(self) -> defer.Deferred:
        from twisted.python import threadable

        self.ran_on_reactor_thread = threadable.isInIOThread()
        return self.deferred


class BridgeTests(unittest.TestCase):
    def setUp(self):
        self.loop = EventLoopThread("test-loop")
        self.loop.start()
        self.addCleanup(self._stop_loop)
        self.bridge = ReactorBridge(reactor)

    def _stop_loop(self):
        self.loop.stop()
        self.loop.join(10)
        self.assertFalse(self.loop.is_alive())

    @defer.inlineCallbacks
    def test_a_value_comes_back(self):
        value = yield on_loop(self.loop, self.bridge.call(lambda a, b: a + b, 2, 3))
        self.assertEqual(value, 5)

    @defer.inlineCallbacks
    def test_a_deferred_is_awaited_on_the_reactor(self):
        recorder = Recorder()
        outcome = on_loop(self.loop, self.bridge.call(recorder.start))
        yield wait_until(lambda: recorder.ran_on_reactor_thread is not None, "the hop ran")
        self.assertTrue(recorder.ran_on_reactor_thread)
        self.assertFalse(outcome.called)
        recorder.deferred.callback("done")
        self.assertEqual((yield outcome), "done")

    @defer.inlineCallbacks
    def test_an_error_is_raised_in_the_coroutine(self):
        def refuse():
            raise errors.NotFound("Job not found")

        with self.assertRaises(errors.NotFound) as caught:
            yield on_loop(self.loop, self.bridge.call(refuse))
        self.assertEqual(caught.exception.message, "Job not found")

        failed = on_loop(self.loop, self.bridge.call(lambda: defer.fail(errors.Draining())))
        yield self.assertFailure(failed, errors.Draining)

    @defer.inlineCallbacks
    def test_the_deadline_cancels_the_deferred_and_answers_node_busy(self):
        recorder = Recorder()
        outcome = on_loop(self.loop, self.bridge.call(recorder.start, timeout=0.2))
        error = yield self.assertFailure(outcome, errors.NodeBusy)
        self.assertTrue(recorder.cancelled)
        self.assertEqual((error.code, error.message), ("UNAVAILABLE", "Node is busy; retry"))

    @defer.inlineCallbacks
    def test_a_cancelled_caller_cancels_the_deferred(self):
        """A caller that stops waiting (a client gone: grpc cancels its handler's
        task) cancels the work on the reactor, long before the hop's deadline."""
        recorder = Recorder()
        waiting = asyncio.wait_for(self.bridge.call(recorder.start, timeout=60), 0.2)
        yield self.assertFailure(on_loop(self.loop, waiting), asyncio.TimeoutError)
        yield wait_until(lambda: recorder.cancelled, "the Deferred on the reactor was cancelled")

    def test_awaiting_a_hop_on_the_reactor_thread_is_refused(self):
        ran = []
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        with self.assertRaises(RuntimeError) as caught:
            loop.run_until_complete(self.bridge.call(ran.append, 1))
        self.assertIn("reactor thread", str(caught.exception))
        self.assertEqual(ran, [])
