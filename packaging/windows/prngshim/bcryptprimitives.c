/*
 * bcryptprimitives.dll shim for wine 8 (Debian bookworm), test use only.
 *
 * Go 1.22 and later Windows programs get their randomness from
 * bcryptprimitives.dll!ProcessPrng, which wine 8 does not provide: without it
 * a Go program exits at start. This DLL exports ProcessPrng and fills the
 * buffer with advapi32!SystemFunction036 (RtlGenRandom), which wine has.
 * Real Windows (8 and later) ships ProcessPrng; nothing here is installed by
 * the packages.
 *
 * Build: x86_64-w64-mingw32-gcc -shared -O2 -s -o bcryptprimitives.dll \
 *        bcryptprimitives.c bcryptprimitives.def -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
	/* RtlGenRandom takes a ULONG length: feed it in chunks. */
	while (size > 0) {
		ULONG n = size > 0x40000000 ? 0x40000000 : (ULONG)size;
		if (!SystemFunction036(data, n))
			return FALSE;
		data += n;
		size -= n;
	}
	return TRUE;
}
