// kernels/int8_ops.c: device dispatch for kernels/int8.h, by the rule at the head of
// kernels/ops.c.
#include "kernels/int8.h"

#include "core/error.h"
#include "kernels/cpu/cpu_int8.h"
#include "kernels/dispatch.h"

double sq_quantize_i8_rows(const float *w, int64_t nout, int64_t k, int8_t *codes, float *scales) {
    return cpu_quantize_i8_rows(w, nout, k, codes, scales);
}

void sq_dequant_i8(sq_tensor *out, const sq_tensor *codes, const sq_tensor *scales) {
    SQ_CHECK(codes->dtype == SQ_I8 && codes->ndim == 2, "dequant_i8: codes must be I8 (Nout, K)");
    SQ_CHECK(scales->dtype == SQ_F32 && sq_tensor_numel(scales) == codes->shape[0], "dequant_i8: scales must be F32 (Nout)");
    SQ_CHECK(sq_tensor_numel(out) == sq_tensor_numel(codes) && out->shape[out->ndim - 1] == codes->shape[1],
             "dequant_i8: out must be (Nout, K)");
    SQ_CHECK(out->device == codes->device && scales->device == codes->device, "dequant_i8: tensors on different devices");
    int64_t nout = codes->shape[0], k = codes->shape[1];
    if (out->device == SQ_CPU) {
        SQ_CHECK(out->dtype == SQ_F32, "dequant_i8: CPU out must be F32");
        cpu_dequant_i8(out->data, codes->data, scales->data, nout, k);
        return;
    }
    SQ_CHECK(out->dtype == SQ_BF16 || out->dtype == SQ_F32, "dequant_i8: CUDA out must be BF16 or F32");
    CUDA_OR_FAIL("dequant_i8", cuda_dequant_i8(out->dtype, out->data, codes->data, scales->data, nout, k));
}
