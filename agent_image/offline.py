"""Offline behaviour (no LLM key): a chime on an audio track in voice mode, echo answers to chat in both modes.

It exercises the real media and data paths of LiveKit with no cloud account, so tests and local
demos see the agent behave like one: a published microphone track, a greeting, and answers.
"""

from __future__ import annotations

import asyncio
import logging

from livekit import rtc

from . import tone
from .config import AgentEnv, Mode
from .lifecycle import Kind, is_human
from .replies import CHAT_TOPIC, greeting, offline_reply

log = logging.getLogger("agent_image.offline")

# LiveKit may announce a sender (participant_connected) seconds after its first message arrives.
SENDER_WAIT_S = 10.0


def kind_of(participant: rtc.RemoteParticipant) -> Kind:
    return Kind.from_name(rtc.ParticipantKind.Name(participant.kind))


class OfflineBehaviour:
    """Started once the room is joined; every background task it makes is cancelled by aclose()."""

    def __init__(self, env: AgentEnv) -> None:
        self._env = env
        self._tasks: set[asyncio.Task[None]] = set()
        self._chime_now = asyncio.Event()
        self._room: rtc.Room | None = None

    @property
    def name(self) -> str:
        return "offline"

    async def start(self, room: rtc.Room) -> None:
        self._room = room
        room.register_text_stream_handler(CHAT_TOPIC, self._on_text_stream)
        room.on("data_received", self._on_data)
        room.on("participant_connected", self._on_participant)
        if self._env.mode is Mode.voice:
            source = rtc.AudioSource(tone.SAMPLE_RATE, 1, queue_size_ms=200)
            track = rtc.LocalAudioTrack.create_audio_track("agent-voice", source)
            await room.local_participant.publish_track(
                track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
            )
            log.info("published audio track 'agent-voice' (offline chime)")
            self._spawn(self._speak(source))
            self._chime_now.set()
        for p in room.remote_participants.values():
            self._on_participant(p)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_participant(self, participant: rtc.RemoteParticipant) -> None:
        if not is_human(kind_of(participant)):
            return
        if self._env.mode is Mode.voice:
            self._chime_now.set()  # the spoken greeting, as far as an offline agent can speak
        else:
            self._spawn(self._send(greeting(self._env.agent), to=participant.identity))

    async def _speak(self, source: rtc.AudioSource) -> None:
        """Feed the track continuously (silence between chimes) so subscribers always get frames."""
        chime = [rtc.AudioFrame(f, tone.SAMPLE_RATE, 1, tone.SAMPLES_PER_FRAME) for f in tone.frames(tone.chime())]
        quiet = rtc.AudioFrame(tone.silence(), tone.SAMPLE_RATE, 1, tone.SAMPLES_PER_FRAME)
        while True:
            if self._chime_now.is_set():
                self._chime_now.clear()
                for frame in chime:
                    await source.capture_frame(frame)
            await source.capture_frame(quiet)  # capture_frame paces us at real time

    async def _sender_kind(self, identity: str) -> Kind | None:
        """A text stream can arrive before the sender's participant_connected event: wait for it, briefly."""
        deadline = asyncio.get_running_loop().time() + SENDER_WAIT_S
        while True:
            participant = self._room.remote_participants.get(identity) if self._room else None
            if participant is not None:
                return kind_of(participant)
            if asyncio.get_running_loop().time() > deadline:
                return None
            await asyncio.sleep(0.05)

    def _on_text_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        self._spawn(self._answer_stream(reader, sender))

    async def _answer_stream(self, reader: rtc.TextStreamReader, sender: str) -> None:
        text = await reader.read_all()
        kind = await self._sender_kind(sender)
        if kind is None or not is_human(kind):
            # Never answer another agent: two agents would talk to each other forever.
            log.info("ignoring chat from %s (kind %s: not a human)", sender, kind.value if kind else "unknown")
            return
        log.info("chat from %s (%d chars); answering", sender, len(text))
        await self._send(offline_reply(self._env.agent, text), to=sender)

    def _on_data(self, packet: rtc.DataPacket) -> None:
        if packet.topic != CHAT_TOPIC or packet.participant is None:
            return
        if not is_human(kind_of(packet.participant)):
            return
        text = packet.data.decode("utf-8", errors="replace")
        log.info("data message from %s (%d bytes); answering", packet.participant.identity, len(packet.data))
        reply = offline_reply(self._env.agent, text)
        assert self._room is not None
        self._spawn(
            self._room.local_participant.publish_data(
                reply, reliable=True, topic=CHAT_TOPIC, destination_identities=[packet.participant.identity]
            )
        )

    async def _send(self, text: str, *, to: str) -> None:
        assert self._room is not None
        await self._room.local_participant.send_text(text, topic=CHAT_TOPIC, destination_identities=[to])
