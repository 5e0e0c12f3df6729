# Type stub for the optional C extension built from _native.c.
_Buf = bytes | bytearray | memoryview

def encode_pages(
    codec: int, src: _Buf, page_size: int, share_zero: bool, dst: bytearray | memoryview, sizes: _Buf
) -> int: ...
def encode_file_pages(
    codec: int,
    fd: int,
    offsets: _Buf,
    page_size: int,
    share_zero: bool,
    dst: bytearray | memoryview,
    sizes: _Buf,
    map_window: int = 0,
    file_size: int = 0,
) -> int: ...
def decide_pages(
    raw: _Buf,
    entry_size: int,
    offsets: tuple[int, int, int, int, int, int, int],
    widths: tuple[int, int],
    start_pfn: int,
    examined: _Buf,
    tail_ok: _Buf,
    params: _Buf,
    kind: _Buf,
    log2n: _Buf,
) -> None: ...
def read_range(fd: int, offset: int, out: bytearray | memoryview, map_window: int, file_size: int) -> int: ...
def read_pages(fd: int, offsets: _Buf, page_size: int, out: bytearray | memoryview) -> None: ...
def lzo1x_1(data: _Buf) -> bytes: ...
def lzo1x_decompress(data: _Buf, size: int) -> bytes: ...
def headroom(page_size: int) -> int: ...
