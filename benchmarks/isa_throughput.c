/*
 * Peak arithmetic throughput of one core for the three instructions a convolution can be
 * built on: fp32 FMA (VFMADD231PS), bf16 dot product (VDPBF16PS) and fp16 FMA
 * (VFMADD231PH). Each loop keeps 16 independent accumulators so the figure is throughput,
 * not latency. Built and run by bench_cpu_peak.py; by hand:
 *
 *   gcc -O2 -mavx512f isa_throughput.c -o isa && ./isa 10000000 bf16 fp16
 *
 * (bf16 and fp16 are opt-in: run them only where /proc/cpuinfo lists avx512_bf16 and
 * avx512_fp16; the loops for them are compiled with function-level target attributes.)
 *
 * Prints one line per instruction: name, instructions per second, FLOP per instruction,
 * GFLOP/s. VDPBF16PS on a 512-bit register does 32 bf16 multiplies and 32 adds into 16
 * fp32 lanes (64 FLOP), twice an fp32 FMA's 32.
 */
#include <immintrin.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#define CHAINS 16

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void report(const char *name, long instructions, double elapsed, int flop, float sink) {
    /* sink keeps the compiler from deleting the loop; it is printed as a comment field */
    printf("%s %.4f %d %.2f # %g\n", name, (double)instructions / elapsed / 1e9, flop,
           (double)instructions / elapsed * flop / 1e9, (double)sink);
}

static void fp32_fma(long iterations) {
    __m512 acc[CHAINS];
    const __m512 a = _mm512_set1_ps(0.5f), b = _mm512_set1_ps(0.25f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    double start = seconds();
    for (long n = 0; n < iterations; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ps(a, acc[i], b);
    }
    double elapsed = seconds() - start;
    float sink = 0.f;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(acc[i]);
    report("fp32_fma_zmm", iterations * CHAINS, elapsed, 32, sink);
}

__attribute__((target("avx512bf16,avx512vl")))
static void bf16_dot(long iterations) {
    __m512 acc[CHAINS];
    /* 0x3c00 is bf16 2^-7: small enough that 16 chains never overflow */
    const __m512bh x = (__m512bh)_mm512_set1_epi16(0x3c00);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ps((float)i);
    double start = seconds();
    for (long n = 0; n < iterations; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_dpbf16_ps(acc[i], x, x);
    }
    double elapsed = seconds() - start;
    float sink = 0.f;
    for (int i = 0; i < CHAINS; i++) sink += _mm512_reduce_add_ps(acc[i]);
    report("bf16_dot_zmm", iterations * CHAINS, elapsed, 64, sink);
}

__attribute__((target("avx512fp16,avx512vl")))
static void fp16_fma(long iterations) {
    __m512h acc[CHAINS];
    const __m512h a = _mm512_set1_ph((_Float16)0.5f), b = _mm512_set1_ph((_Float16)0.25f);
    for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_set1_ph((_Float16)0.0f);
    double start = seconds();
    for (long n = 0; n < iterations; n++) {
#pragma GCC unroll 16
        for (int i = 0; i < CHAINS; i++) acc[i] = _mm512_fmadd_ph(a, acc[i], b);
    }
    double elapsed = seconds() - start;
    float sink = 0.f;
    for (int i = 0; i < CHAINS; i++) sink += (float)acc[i][0];
    report("fp16_fma_zmm", iterations * CHAINS, elapsed, 64, sink);
}

int main(int argc, char **argv) {
    long iterations = 10000000; /* x16 chains: 1.6e8 instructions, about 0.1 s each */
    int want_bf16 = 0, want_fp16 = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "bf16") == 0) want_bf16 = 1;
        else if (strcmp(argv[i], "fp16") == 0) want_fp16 = 1;
        else if (sscanf(argv[i], "%ld", &iterations) != 1) {
            fprintf(stderr, "usage: %s [iterations] [bf16] [fp16]\n", argv[0]);
            return 2;
        }
    }
    fp32_fma(iterations);
    if (want_bf16) bf16_dot(iterations);
    if (want_fp16) fp16_fma(iterations);
    return 0;
}
