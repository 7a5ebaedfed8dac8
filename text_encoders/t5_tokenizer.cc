// text_encoders/t5_tokenizer.cc: the C API of t5_tokenizer.h over libsentencepiece's
// C++ SentencePieceProcessor. The project's one C++ file: nothing C++ crosses the
// API, and no exception escapes it (each entry point catches everything).
#include <sentencepiece_processor.h>
#include <sys/stat.h>

#include <new>
#include <string>
#include <vector>

#include "core/error.h"
#include "text_encoders/t5_tokenizer.h"

struct sd_t5_tokenizer {
    sentencepiece::SentencePieceProcessor sp;
    int eos = 1, pad = 0;
};

// The file's name for messages and for Load: path itself, or path/spiece.model for a folder.
static std::string model_path(const char *path) {
    struct stat st;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        std::string p(path);
        if (!p.empty() && p.back() != '/') p += '/';
        return p + "spiece.model";
    }
    return std::string(path);
}

// The special piece's id, or -1 when the model lacks it (PieceToId gives unk then).
static int special_id(const sentencepiece::SentencePieceProcessor &sp, const char *piece) {
    int id = sp.PieceToId(piece);
    return sp.IdToPiece(id) == piece ? id : -1;
}

extern "C" int sd_t5_tokenizer_load(sd_t5_tokenizer **out, const char *path) {
    *out = nullptr;
    if (!path) return sq_errorf("t5 tokenizer: no path");
    try {
        std::string file = model_path(path);
        struct stat st;
        if (stat(file.c_str(), &st) != 0) return sq_error_errno("%s", file.c_str());
        sd_t5_tokenizer *t = new sd_t5_tokenizer;
        sentencepiece::util::Status s = t->sp.Load(file);
        if (!s.ok()) {
            delete t;
            // A protobuf that does not parse reports a source line and the failing call; say it plainly.
            std::string why = s.ToString();
            if (why.find("ParseFromArray") != std::string::npos) why = "cannot parse the protobuf";
            for (char &ch : why) if (ch == '\n') ch = ' ';
            return sq_errorf("%s: not a SentencePiece model (%s)", file.c_str(), why.c_str());
        }
        t->eos = special_id(t->sp, "</s>");
        t->pad = special_id(t->sp, "<pad>");
        if (t->eos < 0 || t->pad < 0) {
            const char *missing = t->eos < 0 ? "</s>" : "<pad>";
            delete t;
            return sq_errorf("%s: no %s piece, not a T5 model", file.c_str(), missing);
        }
        *out = t;
        return SQ_OK;
    } catch (const std::bad_alloc &) {
        return sq_errorf("%s: out of memory loading the T5 tokenizer", path);
    } catch (...) {
        return sq_errorf("%s: unexpected error loading the T5 tokenizer", path);
    }
}

extern "C" int sd_t5_tokenize(const sd_t5_tokenizer *t, const char *text, int max_len, int32_t *ids, int *n_real) {
    if (!t || !text || !ids) return sq_errorf("t5 tokenize: null argument");
    if (max_len < 1) return sq_errorf("t5 tokenize: max_len %d, need at least 1 (for </s>)", max_len);
    try {
        std::vector<int> pieces;
        sentencepiece::util::Status s = t->sp.Encode(text, &pieces);
        if (!s.ok()) return sq_errorf("t5 tokenize: %s", s.ToString().c_str());
        size_t keep = pieces.size() < (size_t)(max_len - 1) ? pieces.size() : (size_t)(max_len - 1);
        for (size_t i = 0; i < keep; i++) ids[i] = (int32_t)pieces[i];
        ids[keep] = t->eos;
        for (int i = (int)keep + 1; i < max_len; i++) ids[i] = t->pad;
        if (n_real) *n_real = (int)keep + 1;
        return SQ_OK;
    } catch (const std::bad_alloc &) {
        return sq_errorf("t5 tokenize: out of memory");
    } catch (...) {
        return sq_errorf("t5 tokenize: unexpected error");
    }
}

extern "C" void sd_t5_tokenizer_free(sd_t5_tokenizer *t) {
    delete t;
}
