#pragma once
// Stand-in for Gloo's gloo/common/error.h (see ../README.md): nothing is needed from it.
