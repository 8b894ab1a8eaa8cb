#include "comm/communicator.h"

namespace dist_sync {

void Communicator::wait_all(std::vector<std::pair<TransferPtr, int>>& transfers, const char* what) {
  Waiter waiter(*this, what);
  size_t remaining = transfers.size();
  std::vector<bool> done(transfers.size(), false);
  while (remaining > 0) {
    bool progressed = false;
    int waiting_for = -1;
    for (size_t i = 0; i < transfers.size(); ++i) {
      if (done[i]) continue;
      if (transfers[i].first->test()) {
        done[i] = true;
        --remaining;
        progressed = true;
      } else if (waiting_for < 0) {
        waiting_for = transfers[i].second;
      }
    }
    if (progressed) {
      waiter.progressed();
    } else if (remaining > 0) {
      waiter.idle(waiting_for);
    }
  }
}

}  // namespace dist_sync
