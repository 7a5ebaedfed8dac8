// tests/gpu/test_gpu_quant.c: the CUDA quantised ops against the CPU reference.
// - z drawn on the device is bit-identical to z drawn on the host (kernels/rng.h);
// - fused perturbed dequantisation on CUDA (bf16) == bf16(CPU fp32 result), exactly,
//   for sign -1/0/+1 and group sizes 16/32/64/128 (both kernels), on a poisoned output;
// - the QZO scale update on CUDA == the CPU update, bit for bit.
// Skips (exit 77) without a GPU.
#include <math.h>
#include <string.h>

#include "core/error.h"
#include "kernels/backend.h"
#include "kernels/quant.h"
#include "kernels/rng.h"
#include "tests/test_util.h"

int cuda_rng_normals(float *host_out, int64_t n, uint64_t seed, uint64_t step, uint64_t index_base);

int main(void) {
    if (sq_cuda_device_count() <= 0) {
        printf("SKIP: no CUDA GPU found (gpu suite runs on a machine with an NVIDIA GPU)\n");
        return 77;
    }
    sq_device dev;
    if (sq_backend_init("cuda", &dev) != SQ_OK) {
        fprintf(stderr, "cuda init: %s\n", sq_error_message());
        return 1;
    }
    // 1. RNG identity, including indices past 2^32
    enum { N = 1 << 20 };
    static float host[N], device[N];
    uint64_t bases[2] = {0, (1ull << 33) + 5};
    for (int b = 0; b < 2; b++) {
        for (int i = 0; i < N; i++) host[i] = sq_rng_normal(0xC0FFEEull, 12345, bases[b] + (uint64_t)i);
        memset(device, 0xff, sizeof device);
        TU_CHECK(cuda_rng_normals(device, N, 0xC0FFEEull, 12345, bases[b]) == SQ_OK, "rng kernel: %s", sq_error_message());
        int diff = 0;
        for (int i = 0; i < N; i++) diff += memcmp(&host[i], &device[i], 4) != 0;
        TU_CHECK(diff == 0, "host and device z differ at %d of %d indices (base %llu)", diff, N, (unsigned long long)bases[b]);
        printf("rng: %d normals bit-identical host vs device (base %llu): %s\n", N, (unsigned long long)bases[b], diff ? "NO" : "yes");
    }
    // 2. dequantisation
    uint64_t rs = 2024;
    const int64_t nout = 77, k = 384;
    static float w[77 * 384], cpu_out[77 * 384], back[77 * 384];
    static uint8_t codes[77 * 384 / 2];
    static float scales[77 * 384 / 16], scales_cpu[77 * 384 / 16], scales_gpu[77 * 384 / 16];
    tu_fill_uniform(w, nout * k, &rs, -0.1f, 0.1f);
    // group 16 takes the 8-wide kernel; 32, 64 and 128 the 32-wide one (kernels/cuda/quant.cu)
    for (int group = 16; group <= 128; group *= 2) {
        int64_t ng = k / group;
        sq_quantize_q4(w, nout, k, group, codes, scales);
        sq_tensor hc = sq_tensor_view(codes, SQ_Q4, SQ_CPU, 2, SQ_SHAPE(nout, k));
        sq_tensor hs = sq_tensor_view(scales, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, ng));
        sq_tensor ho = sq_tensor_view(cpu_out, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, k));
        sq_tensor dc, ds, dout;
        sq_tensor_alloc(&dc, SQ_Q4, SQ_CUDA, 2, SQ_SHAPE(nout, k));
        sq_tensor_alloc(&ds, SQ_F32, SQ_CUDA, 2, SQ_SHAPE(nout, ng));
        sq_tensor_alloc(&dout, SQ_BF16, SQ_CUDA, 2, SQ_SHAPE(nout, k));
        sq_tensor_copy(&dc, &hc);
        sq_tensor_copy(&ds, &hs);
        for (int sign = -1; sign <= 1; sign++) {
            sq_perturb p = {.seed = 9, .step = 31, .index_base = 5000, .eps = 1e-3f, .sign = sign};
            sq_dequant_q4(&ho, &hc, &hs, (int)group, &p);
            tu_poison(back, nout * k);
            sq_tensor_from_host_f32(&dout, back);   // NaN-poison the device output
            sq_dequant_q4(&dout, &dc, &ds, (int)group, &p);
            sq_tensor_to_host_f32(back, &dout);
            int bad = 0;
            for (int64_t i = 0; i < nout * k; i++)
                if (sq_f32_to_bf16(cpu_out[i]) != sq_f32_to_bf16(back[i]) || isnan(back[i])) bad++;
            TU_CHECK(bad == 0, "dequant group %d sign %d: %d of %lld elements differ from bf16(CPU)", group, sign, bad,
                     (long long)(nout * k));
        }
        // 3. update
        memcpy(scales_cpu, scales, (size_t)(nout * ng) * sizeof(float));
        sq_tensor hsc = sq_tensor_view(scales_cpu, SQ_F32, SQ_CPU, 2, SQ_SHAPE(nout, ng));
        sq_perturb up = {.seed = 9, .step = 31, .index_base = 5000};
        sq_qzo_update(&hsc, &up, 3e-3f);
        sq_qzo_update(&ds, &up, 3e-3f);
        sq_tensor_to_host_f32(scales_gpu, &ds);
        TU_CHECK(!memcmp(scales_cpu, scales_gpu, (size_t)(nout * ng) * sizeof(float)), "update group %d: CUDA != CPU", group);
        printf("group %d: dequant (3 signs) and update bit-identical to CPU\n", group);
        sq_tensor_free(&dc);
        sq_tensor_free(&ds);
        sq_tensor_free(&dout);
    }
    return tu_finish("test_gpu_quant");
}
