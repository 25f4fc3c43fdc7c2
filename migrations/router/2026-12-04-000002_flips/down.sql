DROP TABLE flips;
