#pragma once
// Stand-in for Gloo's gloo/transport/device.h (see ../README.md): opaque transport types, held by
// ProcessGroupGloo behind pointers and created inside libtorch.

namespace gloo {
namespace transport {

class Device;
class UnboundBuffer;

}  // namespace transport
}  // namespace gloo
