"""The serial side of the unit: the byte pipe to the board (port), the retransmitting link that speaks the
firmware's frames (board_link.SerialBoard), and the typed board API the rest of the controller uses."""
