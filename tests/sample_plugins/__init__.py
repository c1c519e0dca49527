"""Small plugins the core's tests load by import path; each shows one behaviour."""
