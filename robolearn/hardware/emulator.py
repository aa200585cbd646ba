"""A servo-bus emulator on a pseudo-terminal, for testing the real drivers without hardware.

`ServoBusEmulator` opens a pty, serves the Feetech or Dynamixel Protocol 2.0 wire protocol on
it from a thread, and keeps a register table per servo; the driver under test opens
`emulator.port` exactly as it would open /dev/ttyACM0. Packet parsing and checksums here are
written independently of `robolearn.hardware.bus`, so a bug in one does not hide in the other.
Positions move toward the goal at `speed` ticks/s while torque is enabled. Errors can be
injected per servo and servos can be unplugged.
"""

from __future__ import annotations

import os
import select
import threading
import time
import tty

_CRC_TABLE = []
for _i in range(256):
    _c = _i << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x8005) & 0xFFFF if _c & 0x8000 else (_c << 1) & 0xFFFF
    _CRC_TABLE.append(_c)


def _crc16(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC_TABLE[((crc >> 8) ^ b) & 0xFF]
    return crc


class ServoBusEmulator:
    """Emulated servos `servo_ids` speaking `protocol` ("feetech" or "dynamixel") on a pty.

    Args:
        registers: the driver's register table (name -> (address, bytes)); the emulator uses
            it only to know where goal/present position and torque live.
        speed: how fast present position follows goal position, ticks/s.
    """

    def __init__(self, protocol: str, servo_ids, registers: dict, speed: float = 8000.0,
                 initial_position: int = 2048):
        if protocol not in ("feetech", "dynamixel"):
            raise ValueError(f"protocol must be 'feetech' or 'dynamixel', got {protocol!r}")
        self.protocol, self.registers, self.speed = protocol, registers, speed
        self.memory = {sid: bytearray(256) for sid in servo_ids}
        self.errors = {sid: 0 for sid in servo_ids}
        self.unplugged: set[int] = set()
        self.requests = 0
        for sid in servo_ids:
            self._set(sid, "present_position", initial_position)
            self._set(sid, "goal_position", initial_position)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        self.port = os.ttyname(self._slave)
        self._last = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    # -- registers -------------------------------------------------------------------------
    def _get(self, sid: int, name: str) -> int:
        addr, n = self.registers[name]
        return int.from_bytes(self.memory[sid][addr:addr + n], "little")

    def _set(self, sid: int, name: str, value: int) -> None:
        addr, n = self.registers[name]
        self.memory[sid][addr:addr + n] = int(value).to_bytes(n, "little")

    def position(self, sid: int) -> int:
        return self._get(sid, "present_position")

    def goal(self, sid: int) -> int:
        return self._get(sid, "goal_position")

    def set_error(self, sid: int, bits: int) -> None:
        """Answer every later request to `sid` with these error bits (0 clears)."""
        self.errors[sid] = bits

    def _move(self) -> None:
        now = time.monotonic()
        step = self.speed * (now - self._last)
        self._last = now
        for sid in self.memory:
            if self._get(sid, "torque_enable"):
                pos, goal = self.position(sid), self.goal(sid)
                self._set(sid, "present_position", pos + max(-step, min(step, goal - pos)))

    # -- serving -----------------------------------------------------------------------------
    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1)
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> ServoBusEmulator:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _serve(self) -> None:
        buffer = b""
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.01)
            if not ready:
                continue
            try:
                buffer += os.read(self._master, 4096)
            except OSError:
                return
            while True:
                consumed, packet = (self._parse_feetech if self.protocol == "feetech" else self._parse_dynamixel)(buffer)
                if consumed == 0:
                    break
                buffer = buffer[consumed:]
                if packet is not None:
                    self.requests += 1
                    self._move()
                    self._handle(*packet)

    def _parse_feetech(self, buf: bytes):
        start = buf.find(b"\xff\xff")
        if start < 0:
            return (len(buf), None) if len(buf) > 1 else (0, None)
        if len(buf) < start + 4 or len(buf) < start + 4 + buf[start + 3]:
            return 0, None
        sid, length = buf[start + 2], buf[start + 3]
        body = buf[start + 2:start + 4 + length - 1]
        end = start + 4 + length
        if (~sum(body)) & 0xFF != buf[end - 1]:
            return end, None  # corrupt: drop it, as a servo would
        return end, (sid, body[2], bytes(body[3:]))

    def _parse_dynamixel(self, buf: bytes):
        start = buf.find(b"\xff\xff\xfd\x00")
        if start < 0:
            return (max(0, len(buf) - 3), None)
        if len(buf) < start + 7:
            return 0, None
        length = buf[start + 5] | (buf[start + 6] << 8)
        end = start + 7 + length
        if len(buf) < end:
            return 0, None
        if _crc16(buf[start:end - 2]) != buf[end - 2] | (buf[end - 1] << 8):
            return end, None
        raw = buf[start + 7:end - 2]
        payload, i = bytearray(), 0
        while i < len(raw):  # undo byte stuffing
            payload.append(raw[i])
            if raw[i] == 0xFD and len(payload) >= 3 and payload[-3:-1] == b"\xff\xff":
                i += 1
            i += 1
        return end, (buf[start + 4], payload[0], bytes(payload[1:]))

    def _reply(self, sid: int, params: bytes = b"") -> None:
        if sid in self.unplugged:
            return
        err = self.errors[sid]
        if self.protocol == "feetech":
            body = bytes([sid, len(params) + 2, err]) + params
            packet = b"\xff\xff" + body + bytes([(~sum(body)) & 0xFF])
        else:
            inner = bytes([0x55, err]) + params
            stuffed = bytearray()
            for b in inner:
                stuffed.append(b)
                if b == 0xFD and len(stuffed) >= 3 and stuffed[-3:-1] == b"\xff\xff":
                    stuffed.append(0xFD)
            head = b"\xff\xff\xfd\x00" + bytes([sid]) + (len(stuffed) + 2).to_bytes(2, "little") + bytes(stuffed)
            packet = head + _crc16(head).to_bytes(2, "little")
        os.write(self._master, packet)

    def _handle(self, sid: int, instruction: int, params: bytes) -> None:
        wide = self.protocol == "dynamixel"  # 2-byte addresses and lengths
        a = 2 if wide else 1

        def num(b: bytes) -> int:
            return int.from_bytes(b, "little")

        if instruction == 0x01 and sid in self.memory:  # ping
            self._reply(sid, b"\x00\x00\x00" if wide else b"")
        elif instruction == 0x02 and sid in self.memory:  # read
            addr, n = num(params[:a]), num(params[a:2 * a])
            self._reply(sid, bytes(self.memory[sid][addr:addr + n]))
        elif instruction == 0x03 and sid in self.memory:  # write
            addr = num(params[:a])
            data = params[a:]
            if sid not in self.unplugged:
                self.memory[sid][addr:addr + len(data)] = data
            self._reply(sid)
        elif instruction == 0x82:  # sync read
            addr, n = num(params[:a]), num(params[a:2 * a])
            for target in params[2 * a:]:
                if target in self.memory:
                    self._reply(target, bytes(self.memory[target][addr:addr + n]))
        elif instruction == 0x83:  # sync write
            addr, n = num(params[:a]), num(params[a:2 * a])
            rest = params[2 * a:]
            for i in range(0, len(rest), n + 1):
                target = rest[i]
                if target in self.memory and target not in self.unplugged:
                    self.memory[target][addr:addr + n] = rest[i + 1:i + 1 + n]
