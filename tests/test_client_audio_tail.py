"""The Python client's unacknowledged listen audio: what a resume sends again."""

from __future__ import annotations

from sluice_client.audio_tail import AudioTail
from sluice_client.messages import AudioFormat

MS = 32  # bytes per ms of 16 kHz mono PCM16


def test_the_tail_starts_at_the_last_final_transcript_not_at_the_furthest_point_heard() -> None:
    # a takeover's fresh run needs the whole of the segment not yet final: the
    # speech_ended / interim transcript past the last final does not move the start
    tail = AudioTail.for_format(AudioFormat("pcm_s16le", 16000), 1 << 20)
    assert tail is not None
    audio = bytes(range(256)) * (3000 * MS // 256)
    for i in range(0, len(audio), 20 * MS):
        tail.add(audio[i : i + 20 * MS])
    tail.heard(1000, final=True)
    tail.heard(2500, final=False)  # speech_ended of the next segment, no final yet
    offset, chunks = tail.unheard()
    assert offset == 1000 * MS
    assert b"".join(chunks) == audio[1000 * MS :]


def test_a_wav_tail_counts_its_header_and_resends_it_before_any_final() -> None:
    tail = AudioTail.for_format(AudioFormat("wav", 16000), 1 << 20)
    assert tail is not None
    audio = b"RIFF" + bytes(40) + bytes(500 * MS)
    tail.add(audio)
    tail.heard(200, final=False)
    assert tail.unheard() == (0, [audio])
    tail.heard(300, final=True)
    offset, chunks = tail.unheard()
    assert offset == 44 + 300 * MS and b"".join(chunks) == audio[offset:]
