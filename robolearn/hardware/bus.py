"""Serial servo buses: Feetech SCS/STS (SO-100/SO-101 arms) and Dynamixel Protocol 2.0 (Koch-style arms).

Both speak half-duplex request/status packets over a serial port (pyserial). This module
builds and checks the packets itself:

Feetech (STS3215 manual, "communication protocol"):
    request  FF FF ID LEN INSTR P1..Pn CHK      LEN = n + 2
    status   FF FF ID LEN ERR   P1..Pn CHK      CHK = ~(ID + LEN + INSTR/ERR + sum(P)) & 0xFF
    multi-byte values little-endian.
Dynamixel Protocol 2.0 (ROBOTIS e-Manual, "Protocol 2.0"):
    request  FF FF FD 00 ID LEN_L LEN_H INSTR P1..Pn CRC_L CRC_H      LEN = n + 3
    status   FF FF FD 00 ID LEN_L LEN_H 55 ERR P1..Pn CRC_L CRC_H
    CRC-16 (polynomial 0x8005, initial value 0) over everything before it; a FF FF FD run inside
    the instruction and parameters is byte-stuffed with an extra FD.

Errors in a status packet raise `ServoError` naming the servo and the error bits; no reply
within the timeout raises `BusTimeout`; a missing port raises `BusError`.
"""

from __future__ import annotations

import abc
import time

import serial

PING, READ, WRITE, SYNC_READ, SYNC_WRITE = 0x01, 0x02, 0x03, 0x82, 0x83


class BusError(RuntimeError):
    """The serial port is missing, cannot be opened, or the bus returned malformed data."""


class BusTimeout(BusError):
    """A servo did not answer in time (disconnected cable, wrong ID, wrong baud rate)."""


class ServoError(BusError):
    """A servo answered with error bits set."""

    def __init__(self, servo_id: int, bits: int, names: list[str]):
        self.servo_id, self.bits, self.names = servo_id, bits, names
        super().__init__(f"servo {servo_id} reports error 0x{bits:02x}: {', '.join(names) or 'unknown'}")


class ServoBus(abc.ABC):
    """A serial port with a servo protocol: read/write registers, synchronized read/write.

    Args:
        port: serial device, e.g. /dev/ttyACM0.
        baudrate: bits/s (1 Mbps for STS3215 and XL330 by default).
        timeout: seconds to wait for a status packet.
    """

    def __init__(self, port: str, baudrate: int = 1_000_000, timeout: float = 0.05):
        self.port_name, self.baudrate, self.timeout = port, baudrate, timeout
        self.serial: serial.Serial | None = None

    def open(self) -> ServoBus:
        try:
            self.serial = serial.Serial(self.port_name, self.baudrate, timeout=self.timeout)
        except serial.SerialException as exc:
            raise BusError(f"cannot open servo bus port {self.port_name!r}: {exc}") from exc
        self.serial.reset_input_buffer()
        return self

    def close(self) -> None:
        if self.serial is not None:
            self.serial.close()
            self.serial = None

    def __enter__(self) -> ServoBus:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- protocol specifics --------------------------------------------------------------
    @abc.abstractmethod
    def _request(self, servo_id: int, instruction: int, params: bytes) -> bytes: ...

    @abc.abstractmethod
    def _read_status(self, servo_id: int) -> bytes: ...

    @abc.abstractmethod
    def _address(self, value: int) -> bytes:
        """Encode a register address (1 byte for Feetech, 2 for Dynamixel)."""

    # -- transport -------------------------------------------------------------------------
    def _send(self, packet: bytes) -> None:
        if self.serial is None:
            raise BusError(f"servo bus {self.port_name!r} is not open")
        self.serial.reset_input_buffer()
        self.serial.write(packet)
        self.serial.flush()

    def _read_exact(self, n: int, servo_id: int) -> bytes:
        data = b""
        deadline = time.monotonic() + self.timeout
        while len(data) < n:
            chunk = self.serial.read(n - len(data))
            data += chunk
            if len(data) < n and time.monotonic() > deadline:
                raise BusTimeout(f"servo {servo_id} on {self.port_name} did not answer within {self.timeout * 1000:.0f} ms")
        return data

    # -- the interface ------------------------------------------------------------------------
    def ping(self, servo_id: int) -> bool:
        """True if servo `servo_id` answers."""
        self._send(self._request(servo_id, PING, b""))
        try:
            self._read_status(servo_id)
        except BusTimeout:
            return False
        return True

    def read(self, servo_id: int, address: int, length: int) -> int:
        """Read an unsigned little-endian register of `length` bytes."""
        self._send(self._request(servo_id, READ, self._address(address) + self._length(length)))
        data = self._read_status(servo_id)
        if len(data) != length:
            raise BusError(f"servo {servo_id} returned {len(data)} bytes for a {length}-byte read")
        return int.from_bytes(data, "little")

    def write(self, servo_id: int, address: int, value: int, length: int) -> None:
        """Write an unsigned little-endian register and wait for the status packet."""
        self._send(self._request(servo_id, WRITE, self._address(address) + value.to_bytes(length, "little")))
        self._read_status(servo_id)

    def sync_read(self, servo_ids: list[int], address: int, length: int) -> dict[int, int]:
        """One request, one status packet per servo in order: {id: value}."""
        self._send(self._request(self.BROADCAST, SYNC_READ,
                                 self._address(address) + self._length(length) + bytes(servo_ids)))
        out = {}
        for sid in servo_ids:
            data = self._read_status(sid)
            if len(data) != length:
                raise BusError(f"servo {sid} returned {len(data)} bytes for a {length}-byte sync read")
            out[sid] = int.from_bytes(data, "little")
        return out

    def sync_write(self, address: int, length: int, values: dict[int, int]) -> None:
        """One broadcast packet writes a register on several servos (no status packets)."""
        payload = b"".join(bytes([sid]) + int(v).to_bytes(length, "little") for sid, v in values.items())
        self._send(self._request(self.BROADCAST, SYNC_WRITE, self._address(address) + self._length(length) + payload))

    BROADCAST = 0xFE

    @abc.abstractmethod
    def _length(self, value: int) -> bytes: ...


# -- Feetech ---------------------------------------------------------------------------------
FEETECH_ERRORS = {0x01: "input voltage", 0x02: "angle sensor", 0x04: "overheat", 0x08: "overcurrent",
                  0x20: "overload"}


def feetech_checksum(body: bytes) -> int:
    """~(sum of ID..last parameter) & 0xFF."""
    return (~sum(body)) & 0xFF


class FeetechBus(ServoBus):
    """Feetech SCS/STS servos (STS3215 in SO-100/SO-101 arms)."""

    #: STS3215 control table: name -> (address, bytes)
    REGISTERS = {"id": (5, 1), "min_angle_limit": (9, 2), "max_angle_limit": (11, 2), "homing_offset": (31, 2),
                 "operating_mode": (33, 1), "torque_enable": (40, 1), "acceleration": (41, 1),
                 "goal_position": (42, 2), "lock": (55, 1), "present_position": (56, 2),
                 "present_speed": (58, 2), "present_load": (60, 2), "present_voltage": (62, 1),
                 "present_temperature": (63, 1)}
    TICKS_PER_TURN = 4096

    def _address(self, value: int) -> bytes:
        return bytes([value])

    def _length(self, value: int) -> bytes:
        return bytes([value])

    def _request(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        body = bytes([servo_id, len(params) + 2, instruction]) + params
        return b"\xff\xff" + body + bytes([feetech_checksum(body)])

    def _read_status(self, servo_id: int) -> bytes:
        header = self._read_exact(4, servo_id)
        if header[:2] != b"\xff\xff":
            raise BusError(f"bad status header from servo {servo_id}: {header.hex()}")
        sid, length = header[2], header[3]
        rest = self._read_exact(length, servo_id)  # ERR, params, CHK
        body = header[2:] + rest[:-1]
        if feetech_checksum(body) != rest[-1]:
            raise BusError(f"checksum mismatch in status from servo {sid}")
        if sid != servo_id:
            raise BusError(f"expected a status from servo {servo_id}, got one from {sid}")
        error = rest[0]
        if error:
            raise ServoError(sid, error, [n for b, n in FEETECH_ERRORS.items() if error & b])
        return rest[1:-1]


# -- Dynamixel Protocol 2.0 ------------------------------------------------------------------------
DYNAMIXEL_ERRORS = {1: "result fail", 2: "instruction error", 3: "CRC error", 4: "data range error",
                    5: "data length error", 6: "data limit error", 7: "access error"}


def dynamixel_crc(data: bytes) -> int:
    """CRC-16 with polynomial 0x8005, initial value 0, no reflection (Protocol 2.0)."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def stuff(payload: bytes) -> bytes:
    """Insert an FD after every FF FF FD in the instruction+parameters (Protocol 2.0 byte stuffing)."""
    out, i = bytearray(), 0
    while i < len(payload):
        out.append(payload[i])
        if payload[i] == 0xFD and i >= 2 and payload[i - 2] == 0xFF and payload[i - 1] == 0xFF:
            out.append(0xFD)
        i += 1
    return bytes(out)


def unstuff(payload: bytes) -> bytes:
    """Remove the stuffed FD after every FF FF FD."""
    out, i = bytearray(), 0
    while i < len(payload):
        out.append(payload[i])
        if payload[i] == 0xFD and len(out) >= 3 and out[-3] == 0xFF and out[-2] == 0xFF:
            i += 1  # skip the stuffing byte
        i += 1
    return bytes(out)


class DynamixelBus(ServoBus):
    """ROBOTIS Dynamixel servos on Protocol 2.0 (XL330, XL430 in Koch-style arms)."""

    #: XL330/XL430 control table: name -> (address, bytes)
    REGISTERS = {"operating_mode": (11, 1), "homing_offset": (20, 4), "torque_enable": (64, 1),
                 "hardware_error_status": (70, 1), "goal_position": (116, 4), "present_velocity": (128, 4),
                 "present_position": (132, 4), "present_temperature": (146, 1)}
    TICKS_PER_TURN = 4096
    HEADER = b"\xff\xff\xfd\x00"

    def _address(self, value: int) -> bytes:
        return value.to_bytes(2, "little")

    def _length(self, value: int) -> bytes:
        return value.to_bytes(2, "little")

    def _request(self, servo_id: int, instruction: int, params: bytes) -> bytes:
        payload = stuff(bytes([instruction]) + params)
        packet = self.HEADER + bytes([servo_id]) + (len(payload) + 2).to_bytes(2, "little") + payload
        return packet + dynamixel_crc(packet).to_bytes(2, "little")

    def _read_status(self, servo_id: int) -> bytes:
        header = self._read_exact(7, servo_id)
        if header[:4] != self.HEADER:
            raise BusError(f"bad status header from servo {servo_id}: {header.hex()}")
        sid, length = header[4], int.from_bytes(header[5:7], "little")
        rest = self._read_exact(length, servo_id)
        if dynamixel_crc(header + rest[:-2]) != int.from_bytes(rest[-2:], "little"):
            raise BusError(f"CRC mismatch in status from servo {sid}")
        payload = unstuff(rest[:-2])
        if sid != servo_id or payload[0] != 0x55:
            raise BusError(f"expected a status (0x55) from servo {servo_id}, got instruction "
                           f"0x{payload[0]:02x} from {sid}")
        error = payload[1]
        if error & 0x7F or error & 0x80:
            names = [DYNAMIXEL_ERRORS.get(error & 0x7F, f"error {error & 0x7F}")] if error & 0x7F else []
            if error & 0x80:
                names.append("hardware alert (see hardware_error_status)")
            raise ServoError(sid, error, names)
        return payload[2:]
