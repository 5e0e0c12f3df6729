# Type stub for the optional C extension built from _native.c.
def encode_pages(
    codec: int,
    src: bytes | bytearray | memoryview,
    page_size: int,
    share_zero: bool,
    dst: bytearray | memoryview,
    sizes: bytearray | memoryview,
) -> int: ...
def headroom(page_size: int) -> int: ...
