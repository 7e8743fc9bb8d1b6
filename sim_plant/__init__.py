"""The plant simulator's package. For now it holds the generator of the shipped demo recording;
the oil, chemical and radiological plant models and their protocol servers arrive here next."""
