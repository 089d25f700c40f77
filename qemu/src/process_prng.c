/*
 * bcryptprimitives.dll for Wine 8.0, which has none: Rust's std (since 1.78) takes its
 * randomness from bcryptprimitives!ProcessPrng, so every Rust program for Windows imports
 * it. This shim exports ProcessPrng and forwards it to RtlGenRandom
 * (advapi32!SystemFunction036), which Wine has. ProcessPrng never fails on Windows; here a
 * failure of RtlGenRandom is passed on as FALSE. The QEMU runner builds it with mingw-w64
 * and puts it next to the test executables it runs under Wine.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
	/* RtlGenRandom takes a ULONG length: feed it in chunks. */
	while (length > 0) {
		ULONG chunk = length > 0x10000000 ? 0x10000000 : (ULONG)length;

		if (!SystemFunction036(data, chunk))
			return FALSE;
		data += chunk;
		length -= chunk;
	}
	return TRUE;
}
