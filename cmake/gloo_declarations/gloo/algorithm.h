#pragma once
// Stand-in for Gloo's gloo/algorithm.h (see README.md in this folder): nothing is needed from it.
#include "gloo/context.h"
